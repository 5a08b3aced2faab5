//! The built-in transformers, run in kustomize's order.

use serde_json::{Map, Value};

use crate::fieldspec::{self, FieldSpec, set_entries, split_path, walk};
use crate::patch::{self, Selector};
use crate::resource::{ResId, Resource};
use crate::{Builder, Error, Kustomization, invalid, parse_docs};

pub(crate) fn run(b: &Builder<'_>, k: &Kustomization, ra: &mut Vec<Resource>) -> Result<(), Error> {
    patches_strategic_merge(b, k, ra)?;
    patches(b, k, ra)?;
    namespace(k, ra)?;
    prefix_suffix(k, ra)?;
    labels(k, ra)?;
    annotations(k, ra)?;
    patches_json6902(b, k, ra)?;
    replicas(k, ra)?;
    images(k, ra)?;
    Ok(())
}

fn apply_specs(
    r: &mut Resource,
    specs: &[FieldSpec],
    f: &mut dyn FnMut(&mut Value) -> Result<(), String>,
) -> Result<(), String> {
    let gvk = r.gvk();
    for fs in specs {
        if gvk.is_selected_by(&fs.gvk) {
            walk(&mut r.obj, &fs.path, fs.create, &mut |v| f(v))?;
        }
    }
    Ok(())
}

/// A patch as written in the kustomization: a file or inline text.
fn patch_docs(
    b: &Builder<'_>,
    k: &Kustomization,
    path: Option<&str>,
    inline: Option<&str>,
) -> Result<Vec<Value>, Error> {
    match (path, inline) {
        (Some(p), None) => {
            let text = b.fs.read_string(&k.dir, p, &k.file)?;
            parse_docs(&text, &b.fs.rel(&k.dir.join(p)))
        }
        (None, Some(text)) => parse_docs(text, &k.file),
        _ => Err(invalid(
            &k.file,
            "a patch needs exactly one of path and patch",
        )),
    }
}

fn patch_id(p: &Value) -> ResId {
    let r = Resource::new(p.clone());
    r.cur_id()
}

/// Applies a strategic merge patch to every resource in `targets`,
/// removing those the patch deletes.
fn apply_smp(
    ra: &mut Vec<Resource>,
    targets: &[usize],
    p: &Value,
    file: &str,
) -> Result<(), Error> {
    let mut deleted = Vec::new();
    for &i in targets {
        let r = &mut ra[i];
        let mut pc = p.clone();
        if let Value::Object(m) = &mut pc {
            // The target decides identity; the patch only changes content.
            m.insert("apiVersion".into(), r.obj["apiVersion"].clone());
            m.insert("kind".into(), r.obj["kind"].clone());
            let md = m
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(md) = md {
                md.insert("name".into(), Value::String(r.name().to_owned()));
                match r.namespace() {
                    "" => {
                        md.remove("namespace");
                    }
                    ns => {
                        md.insert("namespace".into(), Value::String(ns.to_owned()));
                    }
                }
            }
        }
        let keep = patch::strategic_merge(&mut r.obj, &pc).map_err(|e| invalid(file, e))?;
        if !keep {
            deleted.push(i);
        }
    }
    deleted.sort_unstable();
    for i in deleted.into_iter().rev() {
        ra.remove(i);
    }
    Ok(())
}

fn find_by_id(ra: &[Resource], id: &ResId, file: &str) -> Result<usize, Error> {
    let found: Vec<usize> = ra
        .iter()
        .enumerate()
        .filter(|(_, r)| r.has_id(id))
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [i] => Ok(*i),
        [] => Err(invalid(file, format!("patch target {id} not found"))),
        _ => Err(invalid(
            file,
            format!("patch target {id} matches more than one resource"),
        )),
    }
}

fn patches_strategic_merge(
    b: &Builder<'_>,
    k: &Kustomization,
    ra: &mut Vec<Resource>,
) -> Result<(), Error> {
    for entry in k.list("patchesStrategicMerge")? {
        let Value::String(s) = entry else {
            return Err(invalid(
                &k.file,
                "patchesStrategicMerge entries must be strings",
            ));
        };
        let docs = if s.contains('\n') {
            patch_docs(b, k, None, Some(&s))?
        } else {
            patch_docs(b, k, Some(&s), None)?
        };
        for p in docs {
            let i = find_by_id(ra, &patch_id(&p), &k.file)?;
            apply_smp(ra, &[i], &p, &k.file)?;
        }
    }
    Ok(())
}

fn select(ra: &[Resource], sel: &Selector, file: &str) -> Result<Vec<usize>, Error> {
    let mut out = Vec::new();
    for (i, r) in ra.iter().enumerate() {
        if sel.matches(r).map_err(|e| invalid(file, e))? {
            out.push(i);
        }
    }
    Ok(out)
}

fn patches(b: &Builder<'_>, k: &Kustomization, ra: &mut Vec<Resource>) -> Result<(), Error> {
    for entry in k.list("patches")? {
        let Value::Object(m) = &entry else {
            return Err(invalid(&k.file, "patches entries must be maps"));
        };
        for key in m.keys() {
            if !["path", "patch", "target"].contains(&key.as_str()) {
                return Err(Error::Unsupported {
                    file: k.file.clone(),
                    field: format!("patches.{key}"),
                });
            }
        }
        let docs = patch_docs(
            b,
            k,
            m.get("path").and_then(Value::as_str),
            m.get("patch").and_then(Value::as_str),
        )?;
        let target = match m.get("target") {
            None | Some(Value::Null) => None,
            Some(t) => Some(Selector::from_value(t).map_err(|e| invalid(&k.file, e))?),
        };
        let is_json6902 = docs.len() == 1 && docs[0].is_array();
        if is_json6902 {
            let Some(sel) = target else {
                return Err(invalid(&k.file, "a JSON 6902 patch needs a target"));
            };
            for i in select(ra, &sel, &k.file)? {
                patch::json6902(&mut ra[i].obj, &docs[0]).map_err(|e| invalid(&k.file, e))?;
            }
            continue;
        }
        for p in &docs {
            if !p.is_object() {
                return Err(invalid(
                    &k.file,
                    "a patch must be a map or a list of operations",
                ));
            }
            let targets = match &target {
                Some(sel) => select(ra, sel, &k.file)?,
                None => vec![find_by_id(ra, &patch_id(p), &k.file)?],
            };
            apply_smp(ra, &targets, p, &k.file)?;
        }
    }
    Ok(())
}

fn patches_json6902(b: &Builder<'_>, k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    for entry in k.list("patchesJson6902")? {
        let Value::Object(m) = &entry else {
            return Err(invalid(&k.file, "patchesJson6902 entries must be maps"));
        };
        let sel = match m.get("target") {
            Some(t) => Selector::from_value(t).map_err(|e| invalid(&k.file, e))?,
            None => return Err(invalid(&k.file, "patchesJson6902 entries need a target")),
        };
        let docs = patch_docs(
            b,
            k,
            m.get("path").and_then(Value::as_str),
            m.get("patch").and_then(Value::as_str),
        )?;
        let [ops] = docs.as_slice() else {
            return Err(invalid(
                &k.file,
                "a JSON 6902 patch must be one list of operations",
            ));
        };
        for i in select(ra, &sel, &k.file)? {
            patch::json6902(&mut ra[i].obj, ops).map_err(|e| invalid(&k.file, e))?;
        }
    }
    Ok(())
}

fn namespace(k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    let ns = k.string("namespace")?;
    if ns.is_empty() {
        return Ok(());
    }
    for r in ra.iter_mut() {
        let gvk = r.gvk();
        let before = r.cur_id();
        let mut changed = false;
        if !gvk.is_cluster_scoped() {
            if r.namespace() != ns {
                changed = true;
            }
            r.set_namespace(&ns);
        }
        if gvk.kind == "Namespace" && r.name() != ns {
            changed = true;
            r.set_name(&ns);
        }
        if (gvk.kind == "RoleBinding" || gvk.kind == "ClusterRoleBinding")
            && let Some(Value::Array(subjects)) = r.obj.get_mut("subjects")
        {
            // kustomize's roleBindingHack: only subjects named "default"
            // follow the namespace; others are fixed by name references.
            for s in subjects {
                if s.get("name").and_then(Value::as_str) == Some("default")
                    && let Value::Object(m) = s
                {
                    m.insert("namespace".into(), Value::String(ns.clone()));
                }
            }
        }
        if gvk.kind == "APIService" && gvk.group == "apiregistration.k8s.io" {
            walk(
                &mut r.obj,
                &split_path("spec/service/namespace"),
                true,
                &mut |v| {
                    *v = Value::String(ns.clone());
                    Ok(())
                },
            )
            .map_err(|e| invalid(&k.file, e))?;
        }
        if gvk.kind == "CustomResourceDefinition" && gvk.group == "apiextensions.k8s.io" {
            walk(
                &mut r.obj,
                &split_path("spec/conversion/webhook/clientConfig/service/namespace"),
                false,
                &mut |v| {
                    *v = Value::String(ns.clone());
                    Ok(())
                },
            )
            .map_err(|e| invalid(&k.file, e))?;
        }
        if changed {
            r.prev.push(before);
        }
    }
    Ok(())
}

fn prefix_suffix(k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    let prefix = k.string("namePrefix")?;
    let suffix = k.string("nameSuffix")?;
    if prefix.is_empty() && suffix.is_empty() {
        return Ok(());
    }
    for r in ra.iter_mut() {
        let gvk = r.org_id().gvk;
        let skip = gvk.kind == "CustomResourceDefinition"
            || gvk.kind == "Namespace"
            || (gvk.kind == "APIService" && gvk.group == "apiregistration.k8s.io");
        if skip {
            continue;
        }
        r.store_previous_id();
        let name = format!("{prefix}{}{suffix}", r.name());
        r.set_name(&name);
        r.prefixes.push(prefix.clone());
        r.suffixes.push(suffix.clone());
    }
    Ok(())
}

fn set_map_fn(entries: &Map<String, Value>) -> impl FnMut(&mut Value) -> Result<(), String> + '_ {
    move |v| set_entries(v, entries)
}

fn parse_fieldspecs(v: &Value, file: &str) -> Result<Vec<FieldSpec>, Error> {
    let Value::Array(a) = v else {
        return Err(invalid(file, "fields must be a list"));
    };
    a.iter()
        .map(|f| {
            let s = |key: &str| f.get(key).and_then(Value::as_str).unwrap_or_default();
            if s("path").is_empty() {
                return Err(invalid(file, "a field spec needs a path"));
            }
            Ok(FieldSpec::new(
                s("group"),
                s("version"),
                s("kind"),
                s("path"),
                f.get("create").and_then(Value::as_bool).unwrap_or(false),
            ))
        })
        .collect()
}

fn labels(k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    for entry in k.list("labels")? {
        let Value::Object(m) = &entry else {
            return Err(invalid(&k.file, "labels entries must be maps"));
        };
        let mut pairs = Map::new();
        let mut include_selectors = false;
        let mut include_templates = false;
        let mut specs = Vec::new();
        for (key, v) in m {
            match key.as_str() {
                "pairs" => pairs = crate::string_map(Some(v), &k.file, "labels.pairs")?,
                "includeSelectors" => include_selectors = v.as_bool().unwrap_or(false),
                "includeTemplates" => include_templates = v.as_bool().unwrap_or(false),
                "fields" => specs = parse_fieldspecs(v, &k.file)?,
                other => {
                    return Err(Error::Unsupported {
                        file: k.file.clone(),
                        field: format!("labels.{other}"),
                    });
                }
            }
        }
        if include_selectors {
            specs.extend(fieldspec::common_labels());
        } else {
            specs.push(FieldSpec::new("", "", "", "metadata/labels", true));
            if include_templates {
                specs.extend(fieldspec::metadata_labels());
            }
        }
        for r in ra.iter_mut() {
            apply_specs(r, &specs, &mut set_map_fn(&pairs)).map_err(|e| invalid(&k.file, e))?;
        }
    }
    let common = k.string_map("commonLabels")?;
    if !common.is_empty() {
        let specs = fieldspec::common_labels();
        for r in ra.iter_mut() {
            apply_specs(r, &specs, &mut set_map_fn(&common)).map_err(|e| invalid(&k.file, e))?;
        }
    }
    Ok(())
}

fn annotations(k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    let common = k.string_map("commonAnnotations")?;
    if common.is_empty() {
        return Ok(());
    }
    let specs = fieldspec::common_annotations();
    for r in ra.iter_mut() {
        apply_specs(r, &specs, &mut set_map_fn(&common)).map_err(|e| invalid(&k.file, e))?;
    }
    Ok(())
}

fn replicas(k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    let specs = fieldspec::replicas();
    for entry in k.list("replicas")? {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(count) = entry.get("count").filter(|c| c.is_u64() || c.is_i64()) else {
            return Err(invalid(
                &k.file,
                format!("replicas entry {name:?} needs an integer count"),
            ));
        };
        let mut found = false;
        for r in ra.iter_mut() {
            if !r.names().any(|n| n == name) {
                continue;
            }
            let gvk = r.gvk();
            for fs in &specs {
                if gvk.is_selected_by(&fs.gvk) {
                    found = true;
                    walk(&mut r.obj, &fs.path, true, &mut |v| {
                        *v = count.clone();
                        Ok(())
                    })
                    .map_err(|e| invalid(&k.file, e))?;
                }
            }
        }
        if !found {
            return Err(invalid(
                &k.file,
                format!(
                    "replicas: resource with name {name} does not match a config with the following GVK [Deployment ReplicationController ReplicaSet StatefulSet]"
                ),
            ));
        }
    }
    Ok(())
}

/// kustomize's image.Split: name, tag and digest of an image reference.
fn split_image(image: &str) -> (String, String, String) {
    let (search, offset) = match image.find('/') {
        Some(i) if i > 0 => (&image[i..], i),
        _ => (image, 0),
    };
    let at = search.find('@');
    let colon = search.find(':');
    match (colon, at) {
        (None, None) => (image.into(), String::new(), String::new()),
        (c, Some(a)) if c.is_none_or(|c| a < c) => {
            let a = a + offset;
            (image[..a].into(), String::new(), image[a + 1..].into())
        }
        (Some(c), Some(a)) => {
            let (c, a) = (c + offset, a + offset);
            (
                image[..c].into(),
                image[c + 1..a].into(),
                image[a + 1..].into(),
            )
        }
        (Some(c), None) => {
            let c = c + offset;
            (image[..c].into(), image[c + 1..].into(), String::new())
        }
        (None, Some(_)) => unreachable!("handled above"),
    }
}

struct ImageRule {
    name: String,
    new_name: String,
    new_tag: String,
    digest: String,
}

fn update_image(v: &mut Value, rule: &ImageRule) {
    let Some(image) = v.as_str() else { return };
    let (name, tag, digest) = split_image(image);
    if name != rule.name {
        return;
    }
    let mut name = name;
    let (mut tag, mut digest) = (tag, digest);
    if !rule.new_name.is_empty() {
        name = rule.new_name.clone();
    }
    if !rule.new_tag.is_empty() && !rule.digest.is_empty() {
        tag = rule.new_tag.clone();
        digest = rule.digest.clone();
    } else if !rule.new_tag.is_empty() {
        tag = rule.new_tag.clone();
        digest.clear();
    } else if !rule.digest.is_empty() {
        tag.clear();
        digest = rule.digest.clone();
    }
    let mut out = name;
    if !tag.is_empty() {
        out = format!("{out}:{tag}");
    }
    if !digest.is_empty() {
        out = format!("{out}@{digest}");
    }
    *v = Value::String(out);
}

/// kustomize's legacy image filter: every `image` in any `containers` or
/// `initContainers` list anywhere in the object.
fn walk_images(v: &mut Value, rule: &ImageRule) {
    match v {
        Value::Object(m) => {
            for (key, child) in m.iter_mut() {
                if (key == "containers" || key == "initContainers")
                    && let Value::Array(items) = child
                {
                    for c in items.iter_mut() {
                        if let Some(img) = c.get_mut("image") {
                            update_image(img, rule);
                        }
                    }
                }
                walk_images(child, rule);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| walk_images(x, rule)),
        _ => {}
    }
}

fn images(k: &Kustomization, ra: &mut [Resource]) -> Result<(), Error> {
    for entry in k.list("images")? {
        let Value::Object(m) = &entry else {
            return Err(invalid(&k.file, "images entries must be maps"));
        };
        let s = |key: &str| match m.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        for key in m.keys() {
            if !["name", "newName", "newTag", "digest"].contains(&key.as_str()) {
                return Err(Error::Unsupported {
                    file: k.file.clone(),
                    field: format!("images.{key}"),
                });
            }
        }
        let rule = ImageRule {
            name: s("name"),
            new_name: s("newName"),
            new_tag: s("newTag"),
            digest: s("digest"),
        };
        for r in ra.iter_mut() {
            walk_images(&mut r.obj, &rule);
        }
    }
    Ok(())
}
