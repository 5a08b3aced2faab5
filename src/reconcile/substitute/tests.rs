use super::*;
use serde_json::json;

fn vars(pairs: &[(&str, &str)]) -> Vars {
    Vars::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        "test",
    )
    .unwrap()
}

fn sub(input: &str, pairs: &[(&str, &str)]) -> String {
    substitute_str(input, &vars(pairs), false).unwrap()
}

fn strict(input: &str, pairs: &[(&str, &str)]) -> Result<String, SubstError> {
    substitute_str(input, &vars(pairs), true)
}

#[test]
fn plain_variables_and_text() {
    assert_eq!(sub("abcdEFGH28ij", &[]), "abcdEFGH28ij");
    assert_eq!(sub("a ${X} b ${X}", &[("X", "1")]), "a 1 b 1");
    assert_eq!(sub("${X}${Y}", &[("X", "1"), ("Y", "2")]), "12");
    assert_eq!(sub("ünï ${X} ✓", &[("X", "ç")]), "ünï ç ✓");
    // Braces alone are text.
    assert_eq!(sub("}text{ {x}", &[]), "}text{ {x}");
}

#[test]
fn bare_dollar_names_are_not_substituted() {
    assert_eq!(
        sub("$X and $ and $1 and ${X}", &[("X", "v")]),
        "$X and $ and $1 and v"
    );
    assert_eq!(sub("trailing $", &[]), "trailing $");
}

#[test]
fn double_dollar_escapes() {
    let v = [("var01", "abcdEFGH28ij")];
    assert_eq!(sub("$${var01}", &v), "${var01}");
    assert_eq!(sub("$$var01", &v), "$var01");
    assert_eq!(sub("$$$${var01}", &v), "$${var01}");
    assert_eq!(sub("$$${var01}", &v), "$abcdEFGH28ij");
    assert_eq!(
        sub("some text ${var01}$${var$${var01}$var01${var01}", &v),
        "some text abcdEFGH28ij${var${var01}$var01abcdEFGH28ij"
    );
    assert_eq!(
        sub(
            "something $${var=${default_var}}",
            &[("default_var", "foo")]
        ),
        "something ${var=foo}"
    );
    // Backslashes outside an expression are text.
    assert_eq!(sub(r"\\x ${X} \\", &[("X", "y")]), r"\\x y \\");
}

#[test]
fn colon_minus_defaults_when_unset_or_empty() {
    assert_eq!(sub("${X:-d}", &[("X", "v")]), "v");
    assert_eq!(sub("${X:-d}", &[("X", "")]), "d");
    assert_eq!(sub("${X:-d}", &[]), "d");
    assert_eq!(sub("${X:-}", &[]), "");
    assert_eq!(sub("${X:-a b:c/d#e}", &[]), "a b:c/d#e");
}

#[test]
fn minus_defaults_only_when_unset() {
    assert_eq!(sub("${X-d}", &[("X", "v")]), "v");
    assert_eq!(sub("${X-d}", &[("X", "")]), "");
    assert_eq!(sub("${X-d}", &[]), "d");
}

#[test]
fn colon_equals_defaults_when_unset_or_empty_without_assigning() {
    assert_eq!(sub("${X:=d}", &[("X", "v")]), "v");
    assert_eq!(sub("${X:=d}", &[("X", "")]), "d");
    assert_eq!(sub("${X:=d}", &[]), "d");
    // No assignment: a later bare reference is still unset.
    assert_eq!(sub("${X:=d}/${X}", &[]), "d/");
}

#[test]
fn equals_defaults_only_when_unset() {
    assert_eq!(sub("${var=xyz}", &[("var", "abc")]), "abc");
    assert_eq!(sub("${var=xyz}", &[("var", "")]), "");
    assert_eq!(sub("${var=xyz}", &[]), "xyz");
}

#[test]
fn nested_defaults() {
    let d = [("default_var", "foo1")];
    assert_eq!(sub("something ${var=${default_var}}", &d), "something foo1");
    assert_eq!(
        sub("foo: ${var=${default_var}-suffix}", &d),
        "foo: foo1-suffix"
    );
    assert_eq!(
        sub("${var:-prefix${default_var}-suffix}", &d),
        "prefixfoo1-suffix"
    );
    assert_eq!(
        sub("${var=${var01^^}}", &[("var01", "abcdEFGH28ij")]),
        "ABCDEFGH28IJ"
    );
    assert_eq!(sub("${A:-${B:-${C}}}", &[("C", "c")]), "c");
    // `$$` is not an escape inside a default: `$` then the nested expression.
    assert_eq!(sub("${X:-$${Y}}", &[("Y", "y")]), "$y");
    // A default is only evaluated when used, so strict mode does not trip
    // over an unset variable in an unused default.
    assert_eq!(strict("${A:-${B}}", &[("A", "a")]).unwrap(), "a");
    assert_eq!(
        strict("${A:-${B}}", &[("C", "c")]).unwrap_err(),
        SubstError::Unset { name: "B".into() }
    );
}

#[test]
fn length() {
    assert_eq!(sub("${#var01}", &[("var01", "abcdEFGH28ij")]), "12");
    assert_eq!(sub("${#X}", &[("X", "äöü")]), "3");
    assert_eq!(sub("${#X}", &[]), "0");
}

#[test]
fn case_operators() {
    let lower = [("v", "abcdEFGH28ij")];
    let upper = [("v", "ABCDEFGH28IJ")];
    assert_eq!(sub("${v^}", &lower), "AbcdEFGH28ij");
    assert_eq!(sub("${v^^}", &lower), "ABCDEFGH28IJ");
    assert_eq!(sub("${v,}", &upper), "aBCDEFGH28IJ");
    assert_eq!(sub("${v,,}", &upper), "abcdefgh28ij");
    assert_eq!(sub("${v^}", &[("v", "éa")]), "Éa");
    assert_eq!(sub("${v^^}", &[("v", "")]), "");
    // A mixed pair leaves the value unchanged, as in Flux.
    assert_eq!(sub("${v^,}", &lower), "abcdEFGH28ij");
}

#[test]
fn substring() {
    let p = [("path_name", "/home/bozo/ideas/thoughts.for.today")];
    assert_eq!(sub("${path_name:11}", &p), "ideas/thoughts.for.today");
    assert_eq!(sub("${path_name:11:5}", &p), "ideas");
    let v = [("v", "abcdef")];
    assert_eq!(sub("${v:0}", &v), "abcdef");
    assert_eq!(sub("${v:4:10}", &v), "ef");
    assert_eq!(sub("${v:10}", &v), "");
    assert_eq!(sub("${v: -2}", &v), "ef");
    assert_eq!(sub("${v: -20:2}", &v), "ab");
    assert_eq!(sub("${v:1:-1}", &v), "bcde");
    assert_eq!(sub("${v:4:-3}", &v), "");
    assert_eq!(sub("${v:0:0}", &v), "");
    assert_eq!(sub("${v:x}", &v), "abcdef");
    assert_eq!(sub("${v:1:y}", &v), "abcdef");
    assert_eq!(sub("${v:${N}:2}", &[("v", "abcdef"), ("N", "2")]), "cd");
    assert_eq!(sub("${v:1:2}", &[("v", "äöüß")]), "öü");
}

#[test]
fn prefix_and_suffix_removal() {
    let f = [("filename", "bash.string.txt")];
    assert_eq!(sub("${filename#*.}", &f), "string.txt");
    assert_eq!(sub("${filename##*.}", &f), "txt");
    assert_eq!(sub("${filename%.*}", &f), "bash.string");
    assert_eq!(sub("${filename%%.*}", &f), "bash");
    // `*` also matches `/`.
    let p = [("filename", "path/to/file")];
    assert_eq!(sub("${filename#*/}", &p), "to/file");
    assert_eq!(sub("${filename##*/}", &p), "file");
    assert_eq!(
        sub("${filename#*/}", &[("filename", "/path/to/file")]),
        "path/to/file"
    );
    // Classes, `?` and escapes.
    let v = [("v", "v1.2.3-rc1")];
    assert_eq!(sub("${v#v}", &v), "1.2.3-rc1");
    assert_eq!(sub("${v#[a-z]}", &v), "1.2.3-rc1");
    assert_eq!(sub("${v%-rc[0-9]}", &v), "v1.2.3");
    assert_eq!(sub("${v%%[!0-9]*}", &v), "");
    assert_eq!(sub("${v%[!0-9]*}", &v), "v1.2.3-r");
    assert_eq!(sub("${v%%-*}", &v), "v1.2.3");
    assert_eq!(sub("${v#??}", &v), ".2.3-rc1");
    assert_eq!(sub(r"${v#v1\.}", &v), "2.3-rc1");
    assert_eq!(sub("${v#nomatch}", &v), "v1.2.3-rc1");
    assert_eq!(sub("${v#[unclosed}", &v), "v1.2.3-rc1");
    assert_eq!(sub("${v#${P}}", &[("v", "abc"), ("P", "a")]), "bc");
}

#[test]
fn replacement() {
    let z = [("stringZ", "abcABC123ABCabc")];
    assert_eq!(sub("${stringZ/abc/xyz}", &z), "xyzABC123ABCabc");
    assert_eq!(sub("${stringZ//abc/xyz}", &z), "xyzABC123ABCxyz");
    assert_eq!(sub("${stringZ/#abc/XYZ}", &z), "XYZABC123ABCabc");
    assert_eq!(sub("${stringZ/%abc/XYZ}", &z), "abcABC123ABCXYZ");
    assert_eq!(sub("${stringZ/#123/XYZ}", &z), "abcABC123ABCabc");
    assert_eq!(sub("${stringZ/%123/XYZ}", &z), "abcABC123ABCabc");
    let s = [("s", "somevalue")];
    assert_eq!(sub("${s/#/prefix-}", &s), "prefix-somevalue");
    assert_eq!(sub("${s/%/-suffix}", &s), "somevalue-suffix");
    assert_eq!(sub("${s//e}", &s), "somvalu");
    assert_eq!(sub("${s/e/}", &s), "somvalue");
    assert_eq!(sub("${stringZ/./}", &[("stringZ", "foo.bar")]), "foobar");
    // Patterns are literal text, not globs.
    assert_eq!(sub("${s/*/x}", &s), "somevalue");
    // Escapes.
    assert_eq!(sub(r"${s/\//-}", &[("s", "foo/bar")]), "foo-bar");
    assert_eq!(sub(r"${s//\//-}", &[("s", "foo/bar/baz")]), "foo-bar-baz");
    assert_eq!(sub(r"${s//\\/\/}", &[("s", r"a\b")]), "a/b");
    assert_eq!(sub("${s//$$/€}", &[("s", "1$")]), "1€");
    assert_eq!(
        sub("${s//${A}/${B}}", &[("s", "a-a"), ("A", "a"), ("B", "b")]),
        "b-b"
    );
}

#[test]
fn strict_mode_unset_variables() {
    let err = strict("x: ${MISSING}", &[("OTHER", "1")]).unwrap_err();
    assert_eq!(
        err,
        SubstError::Unset {
            name: "MISSING".into()
        }
    );
    assert_eq!(
        err.to_string(),
        r#"variable not set (strict mode): "MISSING""#
    );
    // Transforming operators read the value, so they fail too.
    for input in [
        "${#m}",
        "${m^}",
        "${m,,}",
        "${m:0}",
        "${m:0:1}",
        "${m/a/b}",
        "${m//a/b}",
        "${m/#a/b}",
        "${m/%a/b}",
        "${m#a}",
        "${m##a}",
        "${m%a}",
        "${m%%a}",
    ] {
        assert_eq!(
            strict(input, &[]).unwrap_err(),
            SubstError::Unset { name: "m".into() },
            "{input}"
        );
    }
    // Default-providing operators do not.
    assert_eq!(
        strict("${m:-f}|${m-f}|${m:=f}|${m=f}", &[]).unwrap(),
        "f|f|f|f"
    );
    // Set-but-empty is set.
    assert_eq!(strict("[${E}]", &[("E", "")]).unwrap(), "[]");
}

#[test]
fn non_strict_unset_is_empty() {
    assert_eq!(sub("[${MISSING}]", &[]), "[]");
    assert_eq!(sub("[${#MISSING}${MISSING^^}${MISSING/a/b}]", &[]), "[0]");
}

#[test]
fn invalid_syntax() {
    let err = |input: &str| substitute_str(input, &Vars::default(), false).unwrap_err();
    assert_eq!(
        err("abc ${FOO"),
        SubstError::Unterminated {
            offset: 4,
            excerpt: "${FOO".into()
        }
    );
    assert_eq!(
        err("abc ${FOO").to_string(),
        r#"unterminated ${ at byte 4: "${FOO""#
    );
    assert!(matches!(
        err("${"),
        SubstError::Unterminated { offset: 0, .. }
    ));
    assert!(matches!(
        err("x ${A:-${B}"),
        SubstError::Unterminated { offset: 2, .. }
    ));
    assert!(matches!(err("${A:-d"), SubstError::Unterminated { .. }));
    for (input, reason) in [
        ("${}", "unable to parse variable name"),
        ("${ A}", "unable to parse variable name"),
        ("${#}", "unable to parse variable name"),
        ("${a.b}", r#"unexpected '.' after variable name "a""#),
        ("${A B}", r#"unexpected ' ' after variable name "A""#),
        ("${A:}", "missing substring offset"),
        ("${A:+x}", r#"unsupported operator ":+""#),
        ("${A+x}", r#"unsupported operator "+""#),
        ("${A:?x}", r#"unsupported operator ":?""#),
        ("${A?x}", r#"unsupported operator "?""#),
        ("${#A:-x}", "expected '}' but found ':'"),
        ("${A^x}", "expected '}' but found 'x'"),
    ] {
        match err(input) {
            SubstError::Syntax {
                offset: 0,
                reason: r,
                ..
            } => assert_eq!(r, reason, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
    // A syntax error is found even where evaluation would not look.
    assert!(substitute_str("${A:-x} ${", &vars(&[("A", "a")]), false).is_err());
    let message = err("key: ${a.b}").to_string();
    assert_eq!(
        message,
        r#"bad substitution at byte 5: unexpected '.' after variable name "a": "${a.b}""#
    );
}

#[test]
fn var_names_are_validated() {
    let err = Vars::new(
        BTreeMap::from([("my-var".into(), "x".into())]),
        "ConfigMap/cfg",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"ConfigMap/cfg: "my-var" var name is invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$'"#
    );
    for bad in ["", "1A", "a.b", "ä", "a b"] {
        assert!(!valid_var_name(bad), "{bad}");
    }
    for good in ["_", "A", "a_1", "_9", "CLUSTER_NAME"] {
        assert!(valid_var_name(good), "{good}");
    }
}

#[test]
fn resolve_vars_precedence_and_decoding() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let sources = vec![
        VarSource {
            kind: SubstituteKind::ConfigMap,
            name: "first".into(),
            data: BTreeMap::from([
                ("A".into(), "cm-first".into()),
                ("B".into(), "cm-first".into()),
                ("C".into(), "multi\nline\n".into()),
            ]),
        },
        VarSource {
            kind: SubstituteKind::Secret,
            name: "second".into(),
            data: BTreeMap::from([
                ("B".into(), b64("secret-second")),
                ("D".into(), b64("from-secret")),
            ]),
        },
    ];
    let inline = BTreeMap::from([("D".to_string(), "inline".to_string())]);
    let vars = resolve_vars(&sources, Some(&inline)).unwrap();
    assert_eq!(vars.get("A"), Some("cm-first"));
    assert_eq!(vars.get("B"), Some("secret-second"));
    assert_eq!(vars.get("C"), Some("multiline"));
    assert_eq!(vars.get("D"), Some("inline"));
    assert_eq!(vars.as_map().len(), 4);

    // Later sources win, inline wins over all.
    let vars = resolve_vars(&sources[..1], None).unwrap();
    assert_eq!(vars.get("B"), Some("cm-first"));
    assert!(resolve_vars(&[], None).unwrap().is_empty());

    let bad_secret = VarSource {
        kind: SubstituteKind::Secret,
        name: "s".into(),
        data: BTreeMap::from([("K".into(), "!!notbase64".into())]),
    };
    let err = resolve_vars(&[bad_secret], None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"Secret/s: data key "K": value is not valid base64"#),
        "{err}"
    );
    let binary = VarSource {
        kind: SubstituteKind::Secret,
        name: "s".into(),
        data: BTreeMap::from([(
            "K".into(),
            base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]),
        )]),
    };
    assert_eq!(
        resolve_vars(&[binary], None).unwrap_err().to_string(),
        r#"Secret/s: data key "K": value is not valid UTF-8"#
    );
    let bad_inline = BTreeMap::from([("a-b".to_string(), "x".to_string())]);
    assert!(matches!(
        resolve_vars(&[], Some(&bad_inline)).unwrap_err(),
        SubstError::InvalidVarName { origin, .. } if origin == "postBuild.substitute"
    ));
}

#[test]
fn digest_matches_the_spec_format() {
    assert_eq!(Vars::default().digest(), "");
    let v = vars(&[("B", "2"), ("A", "x")]);
    let mut hasher = Sha256::new();
    hasher.update(b"1:A=1:x\n1:B=1:2\n");
    let expected: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v.digest(), expected);
    assert_ne!(v.digest(), vars(&[("A", "x"), ("B", "3")]).digest());
}

#[test]
fn objects_get_yaml_types_after_substitution() {
    let deploy = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "${NS}"},
        "spec": {
            "replicas": "${REPLICAS}",
            "paused": "${PAUSED}",
            "template": {"spec": {"containers": [{
                "name": "web",
                "image": "nginx:${TAG:=1.25}",
                "env": [
                    {"name": "QUOTED", "value": "'${REPLICAS}'"},
                    {"name": "RATIO", "value": "${RATIO}"},
                    {"name": "KEEP", "value": "$${NOT_A_VAR}"}
                ]
            }]}}
        }
    });
    let v = vars(&[
        ("NS", "prod"),
        ("REPLICAS", "3"),
        ("PAUSED", "false"),
        ("RATIO", "0.5"),
    ]);
    let out = substitute_objects(vec![deploy], &v, true).unwrap();
    assert_eq!(
        out,
        vec![json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {
                "replicas": 3,
                "paused": false,
                "template": {"spec": {"containers": [{
                    "name": "web",
                    "image": "nginx:1.25",
                    "env": [
                        {"name": "QUOTED", "value": "'3'"},
                        {"name": "RATIO", "value": 0.5},
                        {"name": "KEEP", "value": "${NOT_A_VAR}"}
                    ]
                }]}}
            }
        })]
    );
}

#[test]
fn strings_that_look_like_other_types_stay_strings() {
    // Values that are strings before substitution keep their quoting.
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"n": "123", "b": "true", "y": "yes", "x": "${X}", "dollar": "$5"}
    });
    let out = substitute_objects(vec![cm.clone()], &vars(&[("X", "v")]), true).unwrap();
    let mut expected = cm;
    expected["data"]["x"] = json!("v");
    assert_eq!(out, vec![expected]);
}

#[test]
fn multi_line_config_map_round_trip() {
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": "team-a", "labels": {"env": "${ENV}"}},
        "data": {
            "app.properties": "env=${ENV}\nurl=https://${HOST:-example.com}/api\nliteral=$${ENV}\n",
            "script.sh": "#!/bin/sh\necho \"$HOME\" ${ENV,,}\n",
            "plain": "no variables here"
        }
    });
    let out =
        substitute_objects(vec![cm], &vars(&[("ENV", "Prod"), ("UNUSED", "x")]), true).unwrap();
    assert_eq!(
        out,
        vec![json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": "team-a", "labels": {"env": "Prod"}},
            "data": {
                "app.properties": "env=Prod\nurl=https://example.com/api\nliteral=${ENV}\n",
                "script.sh": "#!/bin/sh\necho \"$HOME\" prod\n",
                "plain": "no variables here"
            }
        })]
    );
}

#[test]
fn objects_without_dollars_are_untouched_and_empty_vars_skip() {
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
    let with_dollar = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"k": "$${X} ${X}"}
    });
    // Empty map: no substitution at all, not even `$$`, and no strict error.
    let out = substitute_objects(
        vec![obj.clone(), with_dollar.clone()],
        &Vars::default(),
        true,
    )
    .unwrap();
    assert_eq!(out, vec![obj.clone(), with_dollar]);
    let out = substitute_objects(vec![obj.clone()], &vars(&[("X", "1")]), true).unwrap();
    assert_eq!(out, vec![obj]);
}

#[test]
fn the_flux_disable_annotation_is_not_an_opt_out() {
    // delivery.md §2.3 step 7: "No per-object opt-out annotation".
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "c",
            "annotations": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"},
            "labels": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}
        },
        "data": {"k": "${X}"}
    });
    let out = substitute_objects(vec![cm], &vars(&[("X", "1")]), true).unwrap();
    assert_eq!(out[0]["data"]["k"], json!(1));
}

#[test]
fn object_errors_name_the_object() {
    let cm = |data: Value| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "ns"},
            "data": data
        })
    };
    let v = vars(&[("X", "1")]);
    let err = substitute_objects(vec![cm(json!({"k": "${MISSING}"}))], &v, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"object ConfigMap/ns/c: variable not set (strict mode): "MISSING""#
    );
    assert_eq!(
        substitute_objects(vec![cm(json!({"k": "${MISSING}"}))], &v, false).unwrap()[0]["data"]["k"],
        json!(null),
        "an empty substitution is YAML null, as in Flux"
    );
    let err = substitute_objects(vec![cm(json!({"k": "${X:-abc"}))], &v, true).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("object ConfigMap/ns/c: unterminated ${ at byte "),
        "{err}"
    );
    // A value that breaks the YAML structure.
    let broken = vars(&[("X", "a: b: c")]);
    let err = substitute_objects(vec![cm(json!({"k": "${X}"}))], &broken, true).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("object ConfigMap/ns/c is not valid YAML after substitution: "),
        "{err}"
    );
    let cluster = json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"},
        "spec": {"x": "${X"}
    });
    let err = substitute_objects(vec![cluster], &v, true).unwrap_err();
    assert!(err.to_string().starts_with("object Namespace/n: "), "{err}");
}

#[test]
fn long_lines_survive_serialisation() {
    let words = "lorem ipsum dolor sit amet ".repeat(8);
    let long = format!(
        "${{X:-{}}} and ${{Y}} {}",
        words.trim_end(),
        words.trim_end()
    );
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"long": long, "list": ["${Y}", "x-${Y}"], "${Y}": "key"}
    });
    let out = substitute_objects(vec![cm], &vars(&[("Y", "why")]), true).unwrap();
    assert_eq!(
        out[0]["data"]["long"],
        json!(format!("{} and why {}", words.trim_end(), words.trim_end()))
    );
    assert_eq!(out[0]["data"]["list"], json!(["why", "x-why"]));
    assert_eq!(out[0]["data"]["why"], json!("key"));
}

#[test]
fn glob_matching() {
    let m = |p: &str, t: &str| {
        let text: Vec<char> = t.chars().collect();
        compile_glob(p).map(|g| prefix_matches(&g, &text)[text.len()])
    };
    assert_eq!(m("*", ""), Some(true));
    assert_eq!(m("", ""), Some(true));
    assert_eq!(m("", "a"), Some(false));
    assert_eq!(m("a*c", "abbbc"), Some(true));
    assert_eq!(m("a*c", "abbb"), Some(false));
    assert_eq!(m("a**c*", "ac"), Some(true));
    assert_eq!(m("a?c", "a/c"), Some(true));
    assert_eq!(m("a?c", "ac"), Some(false));
    assert_eq!(m("[abc]", "b"), Some(true));
    assert_eq!(m("[^abc]", "b"), Some(false));
    assert_eq!(m("[!a-c]", "d"), Some(true));
    assert_eq!(m("[a-]", "-"), Some(true));
    assert_eq!(m("[]]", "]"), Some(true));
    assert_eq!(m(r"[\]]", "]"), Some(true));
    assert_eq!(m(r"\*", "*"), Some(true));
    assert_eq!(m(r"\*", "a"), Some(false));
    assert_eq!(m("[a", "a"), None);
    assert_eq!(m("x[a", "y"), None);
    assert_eq!(m("a\\", "a"), None);
    let text: Vec<char> = "abab".chars().collect();
    assert_eq!(
        prefix_matches(&compile_glob("a*b").unwrap(), &text),
        vec![false, false, true, false, true]
    );
}

#[test]
fn pathological_input_is_bounded() {
    // Many stars against a long value: linear per prefix, not exponential.
    let long = "a".repeat(20_000);
    let pattern = format!("${{V#{}b}}", "*a".repeat(30));
    assert_eq!(sub(&pattern, &[("V", &long)]), long);
    // Deep nesting is refused instead of overflowing the stack.
    let deep = "${A:-".repeat(10_000) + &"}".repeat(10_000);
    let err = substitute_str(&deep, &Vars::default(), false).unwrap_err();
    assert!(
        err.to_string().contains("nested more than 32 deep"),
        "{err}"
    );
    let ok = "${A:-".repeat(32) + "x" + &"}".repeat(32);
    assert_eq!(sub(&ok, &[]), "x");
    // Output growth is capped (and the huge results are never built).
    let big = "a".repeat(5000);
    let too_large = |r: Result<String, SubstError>| {
        matches!(r, Err(SubstError::TooLarge { limit: MAX_OUTPUT }))
    };
    assert!(too_large(strict("${B//a/${B}}", &[("B", &big)])));
    assert!(too_large(strict(&"${B}".repeat(5000), &[("B", &big)])));
    assert!(too_large(strict(
        &"${X:-${B}}".repeat(5000),
        &[("B", &big)]
    )));
}
