use super::*;
use serde_json::json;

fn artifact(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(path, content)| ((*path).to_owned(), content.as_bytes().to_vec()))
        .collect()
}

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
}

#[test]
fn clean_path_matches_go() {
    for (input, want) in [
        ("", "."),
        (".", "."),
        ("./", "."),
        ("./app", "app"),
        ("app/", "app"),
        ("app//x/./y/..", "app/x"),
        ("../x", "../x"),
        ("a/../../x", "../x"),
        ("a/..", "."),
        ("/app/", "/app"),
        ("/../x", "/x"),
        ("/", "/"),
        ("..", ".."),
        ("../../a", "../../a"),
    ] {
        assert_eq!(clean_path(input), want, "clean({input:?})");
    }
}

#[test]
fn nested_directories_in_walk_order() {
    let files = artifact(&[
        ("a.yaml", &cm("root-a")),
        ("a/b.yaml", &cm("a-b")),
        ("a/c/d.yml", &cm("a-c-d")),
        ("b.yml", &cm("root-b")),
        ("README.md", "# not a manifest"),
    ]);
    let objects = build(&files, "./").unwrap();
    // Go's filepath.Walk visits directory "a" before the file "a.yaml".
    assert_eq!(
        names(&objects),
        [
            "ConfigMap/a-b",
            "ConfigMap/a-c-d",
            "ConfigMap/root-a",
            "ConfigMap/root-b"
        ]
    );
}

#[test]
fn path_selection() {
    let files = artifact(&[
        ("base.yaml", &cm("base")),
        ("app/app.yaml", &cm("app")),
        ("app/sub/sub.yaml", &cm("sub")),
        ("apple/apple.yaml", &cm("apple")),
    ]);
    for path in ["./app", "app/", "app", "/app", "./app/./", "other/../app"] {
        let objects = build(&files, path).unwrap();
        assert_eq!(
            names(&objects),
            ["ConfigMap/app", "ConfigMap/sub"],
            "path {path:?}"
        );
    }
    for path in ["", ".", "./", "/", "app/.."] {
        assert_eq!(build(&files, path).unwrap().len(), 4, "path {path:?}");
    }
    assert_eq!(names(&build(&files, "app/sub").unwrap()), ["ConfigMap/sub"]);
}

#[test]
fn path_escaping_root_is_refused() {
    let files = artifact(&[("app/app.yaml", &cm("app"))]);
    for path in ["../x", "..", "app/../../x", "./../app"] {
        let err = build(&files, path).unwrap_err();
        assert_eq!(
            err,
            BuildError::PathEscapesRoot {
                path: path.to_owned()
            }
        );
        assert!(
            err.to_string().contains("escapes the artifact root"),
            "{err}"
        );
    }
}

#[test]
fn missing_path_is_reported() {
    let files = artifact(&[("app/app.yaml", &cm("app")), ("file.yaml", &cm("f"))]);
    let err = build(&files, "./ap").unwrap_err();
    assert_eq!(err, BuildError::PathNotFound { path: "ap".into() });
    assert_eq!(err.to_string(), "build path \"ap\" not found in artifact");
    let err = build(&files, "file.yaml").unwrap_err();
    assert_eq!(
        err,
        BuildError::PathNotADirectory {
            path: "file.yaml".into()
        }
    );
    assert!(err.to_string().contains("not a directory"));
}

#[test]
fn no_manifests() {
    let files = artifact(&[
        ("README.md", "hi"),
        ("app/notes.txt", "x"),
        ("other/x.yaml", ""),
    ]);
    let err = build(&files, "app").unwrap_err();
    assert_eq!(err, BuildError::NoManifests { path: "app".into() });
    assert!(err.to_string().contains("\"app\""), "{err}");

    let err = build(&artifact(&[("README.md", "hi")]), "").unwrap_err();
    assert_eq!(err, BuildError::NoManifests { path: ".".into() });

    // An empty artifact: the root exists but holds nothing.
    let err = build(&BTreeMap::new(), "./").unwrap_err();
    assert_eq!(err, BuildError::NoManifests { path: ".".into() });

    // Upper-case extensions count as manifests but are not rendered (Flux parity).
    let files = artifact(&[("app/DEPLOY.YAML", &cm("upper"))]);
    assert_eq!(build(&files, "app").unwrap(), Vec::<Value>::new());
    // A JSON file in a sub-directory counts for presence only.
    let files = artifact(&[("app/sub/x.json", r#"{"apiVersion":"v1"}"#)]);
    assert_eq!(build(&files, "app").unwrap(), Vec::<Value>::new());
}

#[test]
fn kustomization_in_build_dir_is_built_with_kustomize() {
    for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
        let file = format!("app/{name}");
        let files = artifact(&[
            ("app/deploy.yaml", &cm("x")),
            ("app/ignored.yaml", &cm("not-listed")),
            (&file, "namePrefix: p-\nresources: [deploy.yaml]\n"),
        ]);
        assert_eq!(
            names(&build(&files, "./app").unwrap()),
            ["ConfigMap/p-x"],
            "{name}"
        );
    }
    // A broken kustomization names the build path and kustomize's reason.
    let files = artifact(&[
        ("kustomization.yaml", "resources: [missing.yaml]\n"),
        ("a.yaml", &cm("a")),
    ]);
    let err = build(&files, "").unwrap_err();
    assert!(matches!(err, BuildError::Kustomize { .. }), "{err}");
    assert!(err.to_string().contains("missing.yaml"), "{err}");
}

#[test]
fn sub_directory_kustomizations_are_single_resources_of_a_generated_one() {
    let files = artifact(&[
        ("app/a.yaml", &cm("a")),
        ("app/values.yaml", "replicas: 3\n"),
        (
            "app/overlay/kustomization.yaml",
            "nameSuffix: -o\nresources: [b.yaml]\n",
        ),
        ("app/overlay/b.yaml", &cm("b")),
        ("app/overlay/unlisted.yaml", &cm("unlisted")),
    ]);
    let mut got = names(&build(&files, "app").unwrap());
    got.sort();
    assert_eq!(got, ["ConfigMap/a", "ConfigMap/b-o"]);
    // Outside the build dir it does not matter.
    let files = artifact(&[("app/a.yaml", &cm("a")), ("other/kustomization.yaml", "")]);
    assert_eq!(names(&build(&files, "app").unwrap()), ["ConfigMap/a"]);
    // A file merely named like a kustomization with another suffix is fine.
    let files = artifact(&[("app/kustomization.yaml.bak", ""), ("app/a.yaml", &cm("a"))]);
    assert_eq!(names(&build(&files, "app").unwrap()), ["ConfigMap/a"]);
}

#[test]
fn stage_patches_apply_to_plain_manifests_and_kustomizations() {
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: web\n        image: web:1\n";
    let patches = vec![
            Patch {
                patch: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n".into(),
                target: None,
            },
            Patch {
                patch: "- op: replace\n  path: /spec/template/spec/containers/0/image\n  value: web:2\n".into(),
                target: Some(crate::api::PatchSelector {
                    kind: Some("Deployment".into()),
                    name: Some("w.*".into()),
                    ..Default::default()
                }),
            },
        ];
    let plain = artifact(&[
        ("app/deploy.yaml", deploy),
        (
            "app/cm.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}"#,
        ),
    ]);
    let with_kustomization = artifact(&[
        ("app/deploy.yaml", deploy),
        ("app/cm.yaml", &cm("j")),
        (
            "app/kustomization.yaml",
            "resources: [deploy.yaml, cm.yaml]\n",
        ),
    ]);
    for files in [plain, with_kustomization] {
        let objects = build_with_patches(&files, "app", &patches).unwrap();
        let mut got = names(&objects);
        got.sort();
        assert_eq!(got, ["ConfigMap/j", "Deployment/web"]);
        let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );
    }
    // The artifact itself is never modified.
    let files = artifact(&[
        ("app/kustomization.yaml", "resources: [deploy.yaml]\n"),
        ("app/deploy.yaml", deploy),
    ]);
    let before = files.clone();
    build_with_patches(&files, "app", &patches).unwrap();
    assert_eq!(files, before);
}

#[test]
fn a_top_level_json_array_is_kept_when_patches_force_kustomize() {
    // JaaS publishes rendered.json as a bare array; with stage patches the
    // generated kustomization must still list its objects.
    let files = artifact(&[(
        "rendered.json",
        r#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]"#,
    )]);
    let patches = vec![Patch {
        patch: "- op: add\n  path: /data\n  value: {k: v}\n".into(),
        target: Some(crate::api::PatchSelector {
            name: Some("a".into()),
            ..Default::default()
        }),
    }];
    let objects = build_with_patches(&files, "", &patches).unwrap();
    let mut got = names(&objects);
    got.sort();
    assert_eq!(got, ["ConfigMap/a", "ConfigMap/b"]);
    let a = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "a")
        .unwrap();
    assert_eq!(a["data"]["k"], "v");
}

#[test]
fn kustomize_loads_files_anywhere_inside_the_artifact_only() {
    let files = artifact(&[
        ("shared/cm.yaml", &cm("shared")),
        (
            "apps/web/kustomization.yaml",
            "resources: [../../shared/cm.yaml]\n",
        ),
    ]);
    assert_eq!(
        names(&build(&files, "apps/web").unwrap()),
        ["ConfigMap/shared"]
    );
    let files = artifact(&[(
        "apps/web/kustomization.yaml",
        "resources: [../../../etc/passwd]\n",
    )]);
    let err = build(&files, "apps/web").unwrap_err();
    assert!(err.to_string().contains("outside the root"), "{err}");
}

#[test]
fn kustomize_builds_read_the_artifact_in_memory() {
    // A missing file is reported without an operating-system error number:
    // nothing is looked up on disk.
    let files = artifact(&[
        ("kustomization.yaml", "resources: [missing.yaml]\n"),
        ("a.yaml", &cm("a")),
    ]);
    assert_eq!(
        build(&files, "").unwrap_err().to_string(),
        "kustomize build of . failed: kustomization.yaml: cannot read \"missing.yaml\": No such file or directory"
    );
    // Absolute paths never reach the host's filesystem.
    for path in ["/etc/passwd", "/tmp", "/"] {
        let files = artifact(&[("app/kustomization.yaml", &format!("resources: [{path}]\n"))]);
        let err = build(&files, "app").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "kustomize build of app failed: app/kustomization.yaml: path {path:?} is outside the root"
            )
        );
    }
    // A name that is a file and a directory at once (possible in a tarball,
    // impossible on disk) fails the kustomize build, naming the file.
    let files = artifact(&[
        ("kustomization.yaml", "resources: [a.yaml]\n"),
        ("a.yaml", &cm("a")),
        ("x", "plain"),
        ("x/b.yaml", &cm("b")),
    ]);
    assert_eq!(
        build(&files, "").unwrap_err().to_string(),
        "kustomize build of x failed: is both a file and a directory"
    );
    // Files the build adds (a renamed JSON file, the generated kustomization)
    // are seen by the engine.
    let files = artifact(&[
        (
            "app/a.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
        ),
        ("app/c/c.yaml", &cm("c")),
    ]);
    let patches = vec![Patch {
        patch: "- op: add\n  path: /data\n  value: {k: v}\n".into(),
        target: Some(crate::api::PatchSelector {
            kind: Some("ConfigMap".into()),
            ..Default::default()
        }),
    }];
    let objects = build_with_patches(&files, "app", &patches).unwrap();
    let mut got = names(&objects);
    got.sort();
    assert_eq!(got, ["ConfigMap/a", "ConfigMap/c"]);
    assert!(objects.iter().all(|o| o["data"]["k"] == "v"));
}

#[test]
fn render_dir_builds_a_kustomization_in_place_like_kubectl() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = tmp.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("base/kustomization.yaml", "resources: [cm.yaml]\n");
    write(
        "base/cm.yaml",
        &format!("{}data:\n  env: ${{ENV}}\n", cm("settings")),
    );
    write("base/extra.yaml", &cm("extra"));
    write(
        "app/overlay/kustomization.yaml",
        "namePrefix: prod-\nresources: [../../base]\n",
    );
    // DIR is app/: the base is outside it, as `kubectl kustomize` allows.
    let dir = tmp.path().join("app");
    let patches = vec![Patch {
        patch: "- op: add\n  path: /metadata/annotations\n  value: {stage: patched}\n".into(),
        target: Some(crate::api::PatchSelector {
            name: Some("settings".into()),
            ..Default::default()
        }),
    }];
    let vars = substitute::resolve_vars(&[], Some(&[("ENV".to_owned(), "prod".to_owned())].into()))
        .unwrap();
    let objects = render_dir(&dir, "overlay", &patches, Some(&vars)).unwrap();
    assert_eq!(names(&objects), ["ConfigMap/prod-settings"]);
    assert_eq!(objects[0]["metadata"]["annotations"]["stage"], "patched");
    assert_eq!(objects[0]["data"]["env"], "prod");
    // Nothing was written next to the kustomization.
    assert_eq!(
        std::fs::read_to_string(dir.join("overlay/kustomization.yaml")).unwrap(),
        "namePrefix: prod-\nresources: [../../base]\n"
    );
    // The controller's build of the same artifact never leaves it.
    let err = build(&read_dir(&dir).unwrap(), "overlay").unwrap_err();
    assert!(err.to_string().contains("outside the root"), "{err}");

    // A plain file outside the kustomization's directory is refused.
    write(
        "app/overlay/kustomization.yaml",
        "resources: [../../base, ../../base/extra.yaml]\n",
    );
    let err = render_dir(&dir, "overlay", &[], None).unwrap_err();
    assert_eq!(
        err,
        "kustomize build of overlay failed: overlay/kustomization.yaml: path \"../../base/extra.yaml\" is outside the kustomization directory \"overlay\""
    );
    // The build path still may not climb out of DIR.
    let err = render_dir(&dir, "../base", &[], None).unwrap_err();
    assert_eq!(err, "build path \"../base\" escapes the artifact root");
}

#[test]
fn render_dir_without_a_kustomization_renders_like_the_controller() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("app")).unwrap();
    std::fs::write(tmp.path().join("app/a.yaml"), cm("a")).unwrap();
    std::fs::write(tmp.path().join("app/values.yaml"), "replicas: 1\n").unwrap();
    let patches = vec![Patch {
        patch: "- op: add\n  path: /data\n  value: {k: v}\n".into(),
        target: Some(crate::api::PatchSelector {
            kind: Some("ConfigMap".into()),
            ..Default::default()
        }),
    }];
    let objects = render_dir(tmp.path(), "app", &patches, None).unwrap();
    let files = read_dir(tmp.path()).unwrap();
    assert_eq!(objects, render(&files, "app", &patches, None).unwrap());
    assert_eq!(objects[0]["data"]["k"], "v");
    let err = render_dir(tmp.path(), "nope", &[], None).unwrap_err();
    assert_eq!(err, "build path \"nope\" not found in artifact");
}

#[test]
fn an_empty_generated_kustomization_renders_nothing() {
    // Only non-Kubernetes YAML next to patches: the placeholder is dropped.
    let files = artifact(&[("app/values.yaml", "a: 1\n")]);
    let patches = vec![Patch {
        patch: "- op: add\n  path: /metadata/labels\n  value: {}\n".into(),
        target: Some(crate::api::PatchSelector {
            kind: Some("ConfigMap".into()),
            ..Default::default()
        }),
    }];
    assert_eq!(
        build_with_patches(&files, "app", &patches).unwrap(),
        Vec::<Value>::new()
    );
}

#[test]
fn render_substitutes_after_the_build() {
    let files = artifact(&[(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${NAME}\ndata:\n  k: $${NOT}\n",
    )]);
    let vars =
        substitute::resolve_vars(&[], Some(&[("NAME".to_owned(), "x".to_owned())].into())).unwrap();
    let objects = render(&files, "", &[], Some(&vars)).unwrap();
    assert_eq!(names(&objects), ["ConfigMap/x"]);
    assert_eq!(objects[0]["data"]["k"], "${NOT}");
    // Strict: an unset variable fails the render.
    let files = artifact(&[(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${UNSET}\n",
    )]);
    let err = render(&files, "", &[], Some(&vars)).unwrap_err();
    assert!(err.to_string().contains("UNSET"), "{err}");
    // No variables: `${...}` stays as written.
    let objects = render(&files, "", &[], None).unwrap();
    assert_eq!(names(&objects), ["ConfigMap/${UNSET}"]);
}

#[test]
fn json_rename_rule() {
    let files = artifact(&[
        (
            "app/rendered.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"from-json"},"data":{"n":"1"}}"#,
        ),
        (
            "app/x.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x-json"}}"#,
        ),
        ("app/x.yaml", &cm("x-yaml")),
        (
            "app/sub/nested.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"nested-json"}}"#,
        ),
        ("app/sub/nested.yaml", &cm("nested-yaml")),
        (
            "app/y.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"y-json"}}"#,
        ),
        ("app/y.yml", &cm("y-yml")),
    ]);
    let objects = build(&files, "app").unwrap();
    assert_eq!(
        names(&objects),
        [
            "ConfigMap/from-json",
            "ConfigMap/nested-yaml",
            "ConfigMap/x-yaml",
            // y.json sorts as y.yaml, before y.yml; only a same-named .yaml suppresses it.
            "ConfigMap/y-json",
            "ConfigMap/y-yml",
        ]
    );
    assert_eq!(objects[0]["data"]["n"], "1");
}

#[test]
fn json_sorts_under_its_renamed_name() {
    // "a.json" < "a.k8s.yaml" byte-wise, but it is rendered as "a.yaml" > "a.k8s.yaml".
    let files = artifact(&[
        (
            "a.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"json"}}"#,
        ),
        ("a.k8s.yaml", &cm("k8s")),
    ]);
    assert_eq!(
        names(&build(&files, "").unwrap()),
        ["ConfigMap/k8s", "ConfigMap/json"]
    );
}

#[test]
fn multi_document_yaml_with_comments() {
    let content = "\
# leading comment
---
apiVersion: v1
kind: Namespace
metadata:
  name: team-a # trailing comment
---
# a document holding only a comment
---
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: team-a
spec:
  replicas: 2
...
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team-a
data:
  80: http
  true: yes
  key: |
    line one
    line two
";
    let objects = build(&artifact(&[("all.yaml", content)]), "").unwrap();
    assert_eq!(
        names(&objects),
        ["Namespace/team-a", "Deployment/web", "ConfigMap/settings"]
    );
    assert_eq!(objects[1]["spec"]["replicas"], 2);
    assert_eq!(
        objects[2]["data"],
        json!({"80": "http", "true": "yes", "key": "line one\nline two\n"})
    );
}

#[test]
fn anchors_and_merge_keys() {
    let content = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: merged
  labels: &labels
    app: web
  annotations:
    <<: *labels
    extra: x
";
    let objects = build(&artifact(&[("m.yaml", content)]), "").unwrap();
    assert_eq!(objects[0]["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        objects[0]["metadata"]["annotations"],
        json!({"app": "web", "extra": "x"})
    );
}

#[test]
fn lists_are_flattened_recursively() {
    let content = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: one}
  - apiVersion: v1
    kind: ConfigMapList
    metadata: {resourceVersion: "7"}
    items:
      - apiVersion: v1
        kind: ConfigMap
        metadata: {name: two, resourceVersion: "5"}
      - apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Secret
            metadata: {name: three}
  - null
---
apiVersion: v1
kind: List
items: []
---
apiVersion: v1
kind: ConfigMap
metadata: {name: four}
"#;
    let objects = build(&artifact(&[("list.yaml", content)]), "").unwrap();
    assert_eq!(
        names(&objects),
        [
            "ConfigMap/one",
            "ConfigMap/two",
            "Secret/three",
            "ConfigMap/four"
        ]
    );
    assert!(objects[1]["metadata"].get("resourceVersion").is_none());

    // A kind ending in "List" without items is an ordinary object.
    let content = "apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: a}\nspec: {}\n";
    let objects = build(&artifact(&[("a.yaml", content)]), "").unwrap();
    assert_eq!(names(&objects), ["AllowList/a"]);

    let content = "apiVersion: v1\nkind: List\nitems:\n  - just a string\n";
    let err = build(&artifact(&[("bad-list.yaml", content)]), "").unwrap_err();
    assert!(matches!(&err, BuildError::InvalidDocument { file, .. } if file == "bad-list.yaml"));
    assert!(err.to_string().contains("item 1 of List"), "{err}");
}

#[test]
fn incomplete_and_kustomize_documents_are_dropped() {
    let content = r#"
kind: ConfigMap
metadata: {name: no-api-version}
---
apiVersion: v1
metadata: {name: no-kind}
---
apiVersion: v1
kind: ConfigMap
metadata: {generateName: no-name-}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ""}
---
apiVersion: v1
kind: ConfigMap
metadata: no-mapping
---
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
metadata: {name: kustomize-config}
resources: [a.yaml]
---
{}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: flux-kustomization, namespace: flux-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kept}
"#;
    let objects = build(&artifact(&[("mixed.yaml", content)]), "").unwrap();
    assert_eq!(
        names(&objects),
        ["Kustomization/flux-kustomization", "ConfigMap/kept"]
    );
}

#[test]
fn yaml_error_names_the_file_and_line() {
    let content = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
        cm("ok")
    );
    let files = artifact(&[("a.yaml", &cm("a")), ("app/broken.yaml", &content)]);
    let err = build(&files, "").unwrap_err();
    let BuildError::Yaml { file, message } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(file, "app/broken.yaml");
    assert!(message.contains("line"), "{message}");
    assert!(
        err.to_string()
            .starts_with("failed to parse app/broken.yaml: "),
        "{err}"
    );
}

#[test]
fn broken_json_reports_the_file() {
    // Truncated output: neither valid JSON nor valid YAML.
    let files = artifact(&[(
        "rendered.json",
        r#"[{"apiVersion": "v1", "kind": "ConfigMap""#,
    )]);
    let err = build(&files, "").unwrap_err();
    assert!(
        matches!(&err, BuildError::Yaml { file, .. } if file == "rendered.json"),
        "{err:?}"
    );
}

#[test]
fn non_mapping_documents_are_refused() {
    let files = artifact(&[("scalar.yaml", &format!("{}---\njust a string\n", cm("a")))]);
    let err = build(&files, "").unwrap_err();
    assert_eq!(
        err,
        BuildError::InvalidDocument {
            file: "scalar.yaml".into(),
            message: "document 2: expected a Kubernetes object (mapping), found a string".into()
        }
    );
    let files = artifact(&[("seq.yaml", "- 1\n- 2\n")]);
    let err = build(&files, "").unwrap_err();
    assert!(err.to_string().contains("seq.yaml"), "{err}");
    assert!(err.to_string().contains("element 1"), "{err}");
}

#[test]
fn server_fields_are_stripped() {
    let content = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
  annotations: {a: b}
  creationTimestamp: "2024-01-01T00:00:00Z"
  resourceVersion: "1234"
  uid: 0b5e2c1c-9f5a-4a4e-8d0c-000000000000
  generation: 3
  selfLink: /apis/apps/v1/namespaces/default/deployments/web
  managedFields:
    - manager: kubectl
      operation: Apply
spec:
  replicas: 1
  template:
    metadata:
      creationTimestamp: null
status:
  replicas: 1
"#;
    let objects = build(&artifact(&[("d.yaml", content)]), "").unwrap();
    assert_eq!(
        objects[0],
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web"},
                "annotations": {"a": "b"}
            },
            // Only the object's own metadata is touched.
            "spec": {"replicas": 1, "template": {"metadata": {"creationTimestamp": null}}}
        })
    );
}

#[test]
fn empty_array_and_top_level_arrays() {
    let files = artifact(&[("rendered.json", "[]")]);
    assert_eq!(build(&files, "").unwrap(), Vec::<Value>::new());

    let files = artifact(&[(
        "rendered.json",
        r#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
                null,
                {"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"b"}}]}]"#,
    )]);
    assert_eq!(
        names(&build(&files, "").unwrap()),
        ["ConfigMap/a", "Secret/b"]
    );

    // Empty and comment-only files render nothing without error.
    let files = artifact(&[("empty.yaml", ""), ("comment.yml", "# nothing\n---\n")]);
    assert_eq!(build(&files, "").unwrap(), Vec::<Value>::new());
}

#[test]
fn json_numbers_are_preserved() {
    let files = artifact(&[(
        "r.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"n"},"x":{"big":9007199254740993,"f":1.5,"e":1e3}}"#,
    )]);
    let objects = build(&files, "").unwrap();
    assert_eq!(
        objects[0]["x"],
        json!({"big": 9007199254740993_u64, "f": 1.5, "e": 1000.0})
    );
}

#[test]
fn duplicate_objects_are_refused() {
    let files = artifact(&[("a.yaml", &cm("same")), ("b/c.yaml", &cm("same"))]);
    let err = build(&files, "").unwrap_err();
    assert_eq!(
        err,
        BuildError::DuplicateObject {
            id: "ConfigMap/same".into(),
            first: "a.yaml".into(),
            second: "b/c.yaml".into()
        }
    );
    // Different namespaces or groups are different objects.
    let other_ns = format!("{}  namespace: other\n", cm("same"));
    let other_group = "apiVersion: example.com/v1\nkind: ConfigMap\nmetadata:\n  name: same\n";
    let files = artifact(&[
        ("a.yaml", &cm("same")),
        ("b.yaml", &other_ns),
        ("c.yaml", other_group),
    ]);
    assert_eq!(build(&files, "").unwrap().len(), 3);
}
