//! configMapGenerator and secretGenerator.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::resource::{Behavior, Resource};
use crate::{Builder, Error, Kustomization, invalid, string_map};

#[derive(Default, Clone)]
struct Options {
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    disable_hash: bool,
    immutable: bool,
}

fn parse_options(v: Option<&Value>, file: &str, what: &str) -> Result<Options, Error> {
    let mut o = Options::default();
    let Some(v) = v else { return Ok(o) };
    if v.is_null() {
        return Ok(o);
    }
    let Value::Object(m) = v else {
        return Err(invalid(file, format!("{what} must be a map")));
    };
    for (k, val) in m {
        match k.as_str() {
            "labels" => o.labels = string_map(Some(val), file, &format!("{what}.labels"))?,
            "annotations" => {
                o.annotations = string_map(Some(val), file, &format!("{what}.annotations"))?
            }
            "disableNameSuffixHash" => o.disable_hash = val.as_bool().unwrap_or(false),
            "immutable" => o.immutable = val.as_bool().unwrap_or(false),
            other => {
                return Err(Error::Unsupported {
                    file: file.to_string(),
                    field: format!("{what}.{other}"),
                });
            }
        }
    }
    Ok(o)
}

/// kustomize's MergeGlobalOptionsIntoLocal: the global options win.
fn merge_options(local: Options, global: &Options) -> Options {
    let mut o = local;
    for (k, v) in &global.labels {
        o.labels.insert(k.clone(), v.clone());
    }
    for (k, v) in &global.annotations {
        o.annotations.insert(k.clone(), v.clone());
    }
    o.disable_hash |= global.disable_hash;
    o.immutable |= global.immutable;
    o
}

fn strings(v: Option<&Value>, file: &str, what: &str) -> Result<Vec<String>, Error> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(x.to_string()),
                _ => Err(invalid(file, format!("{what} entries must be strings"))),
            })
            .collect(),
        Some(_) => Err(invalid(file, format!("{what} must be a list"))),
    }
}

/// kyaml's encodeBase64: standard base64, cut into 70-character lines each
/// ended by a newline once the text reaches 70 characters.
fn encode_base64(bytes: &[u8]) -> String {
    const LINE: usize = 70;
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    if enc.len() < LINE {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + enc.len() / LINE + 1);
    for chunk in enc.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

fn remove_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && b[0] == b[b.len() - 1] && (b[0] == b'"' || b[0] == b'\'') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

fn is_env_var_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// One piece of generated data; `bytes` are kept raw for binary files.
struct Pair {
    key: String,
    bytes: Vec<u8>,
}

fn env_pairs(text: &str, file: &str, env_file: &str) -> Result<Vec<Pair>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        if !is_env_var_name(key) {
            return Err(invalid(
                file,
                format!(
                    "{env_file:?} line {}: {key:?} is not a valid key name",
                    i + 1
                ),
            ));
        }
        out.push(Pair {
            key: key.to_string(),
            bytes: value.as_bytes().to_vec(),
        });
    }
    Ok(out)
}

fn generate_one(
    b: &Builder<'_>,
    k: &Kustomization,
    spec: &Value,
    secret: bool,
    global: &Options,
) -> Result<Resource, Error> {
    let file = k.file.as_str();
    let what = if secret {
        "secretGenerator"
    } else {
        "configMapGenerator"
    };
    let Value::Object(m) = spec else {
        return Err(invalid(file, format!("{what} entries must be maps")));
    };
    let mut name = String::new();
    let mut namespace = String::new();
    let mut behavior = Behavior::Create;
    let mut secret_type = "Opaque".to_string();
    let mut options = Options::default();
    let mut pairs = Vec::new();
    let mut env_files = Vec::new();
    let mut literals = Vec::new();
    let mut files = Vec::new();
    for (key, v) in m {
        match key.as_str() {
            "name" => name = v.as_str().unwrap_or_default().to_string(),
            "namespace" => namespace = v.as_str().unwrap_or_default().to_string(),
            "behavior" => {
                behavior = match v.as_str().unwrap_or("create") {
                    "" | "create" => Behavior::Create,
                    "merge" => Behavior::Merge,
                    "replace" => Behavior::Replace,
                    other => {
                        return Err(invalid(file, format!("{what}: unknown behavior {other:?}")));
                    }
                }
            }
            "type" if secret => secret_type = v.as_str().unwrap_or("Opaque").to_string(),
            "options" => options = parse_options(Some(v), file, &format!("{what}.options"))?,
            "envs" => env_files.extend(strings(Some(v), file, "envs")?),
            "env" => env_files.extend(strings(Some(v), file, "env")?),
            "literals" => literals = strings(Some(v), file, "literals")?,
            "files" => files = strings(Some(v), file, "files")?,
            other => {
                return Err(Error::Unsupported {
                    file: file.to_string(),
                    field: format!("{what}.{other}"),
                });
            }
        }
    }
    if name.is_empty() {
        return Err(invalid(file, format!("{what}: an entry has no name")));
    }
    for env in &env_files {
        let text = b.fs.read_string(&k.dir, env, file)?;
        pairs.extend(env_pairs(&text, file, env)?);
    }
    for lit in &literals {
        let Some((key, value)) = lit.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(invalid(
                file,
                format!("{what} {name}: literal {lit:?} must be key=value"),
            ));
        };
        pairs.push(Pair {
            key: key.to_string(),
            bytes: remove_quotes(value).as_bytes().to_vec(),
        });
    }
    for f in &files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) if !k.is_empty() && !p.is_empty() => (k.to_string(), p.to_string()),
            Some(_) => {
                return Err(invalid(
                    file,
                    format!("{what} {name}: file source {f:?} must be key=path or path"),
                ));
            }
            None => {
                let key = std::path::Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (key, f.clone())
            }
        };
        let bytes = b.fs.read(&k.dir, &path, file)?.into_owned();
        pairs.push(Pair { key, bytes });
    }

    let options = merge_options(options, global);
    let mut data = Map::new();
    let mut binary = Map::new();
    for p in pairs {
        if data.contains_key(&p.key) || binary.contains_key(&p.key) {
            return Err(invalid(
                file,
                format!("{what} {name}: key {:?} is repeated", p.key),
            ));
        }
        if secret {
            data.insert(p.key, Value::String(encode_base64(&p.bytes)));
        } else {
            match String::from_utf8(p.bytes) {
                Ok(s) => {
                    data.insert(p.key, Value::String(s));
                }
                Err(e) => {
                    binary.insert(p.key, Value::String(encode_base64(e.as_bytes())));
                }
            }
        }
    }
    let mut md = Map::new();
    md.insert("name".into(), Value::String(name));
    if !namespace.is_empty() {
        md.insert("namespace".into(), Value::String(namespace));
    }
    if !options.labels.is_empty() {
        md.insert("labels".into(), Value::Object(options.labels.clone()));
    }
    if !options.annotations.is_empty() {
        md.insert(
            "annotations".into(),
            Value::Object(options.annotations.clone()),
        );
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String("v1".into()));
    obj.insert(
        "kind".into(),
        Value::String(if secret { "Secret" } else { "ConfigMap" }.into()),
    );
    obj.insert("metadata".into(), Value::Object(md));
    if secret {
        obj.insert("type".into(), Value::String(secret_type));
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    if options.immutable {
        obj.insert("immutable".into(), Value::Bool(true));
    }
    let mut r = Resource::new(Value::Object(obj));
    r.needs_hash = !options.disable_hash;
    r.behavior = behavior;
    Ok(r)
}

/// Adds the names `r` (at `i` in its list) has had to `by_name`.
fn index_names(by_name: &mut HashMap<String, Vec<usize>>, r: &Resource, i: usize) {
    for name in r.names() {
        match by_name.get_mut(name) {
            Some(list) if list.last() == Some(&i) => {}
            Some(list) => list.push(i),
            None => {
                by_name.insert(name.to_owned(), vec![i]);
            }
        }
    }
}

/// Runs both generators and absorbs their output the way kustomize's
/// appendReplaceOrMerge does.
pub(crate) fn run(b: &Builder<'_>, k: &Kustomization, ra: &mut Vec<Resource>) -> Result<(), Error> {
    let global = parse_options(
        k.fields.get("generatorOptions"),
        &k.file,
        "generatorOptions",
    )?;
    let mut generated = Vec::new();
    for spec in k.list("configMapGenerator")? {
        generated.push(generate_one(b, k, &spec, false, &global)?);
    }
    for spec in k.list("secretGenerator")? {
        generated.push(generate_one(b, k, &spec, true, &global)?);
    }
    if generated.is_empty() {
        return Ok(());
    }
    // Each generated object is compared with the few resources that have
    // had its name, rather than with every resource.
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in ra.iter().enumerate() {
        index_names(&mut by_name, r, i);
    }
    for mut res in generated {
        let id = res.cur_id();
        // In ascending order, as the resources are indexed in order.
        let matches: Vec<usize> = by_name
            .get(&id.name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| ra[i].has_id(&id))
            .collect();
        match (matches.as_slice(), res.behavior) {
            ([], Behavior::Create) => {
                index_names(&mut by_name, &res, ra.len());
                ra.push(res);
            }
            ([], _) => {
                return Err(invalid(
                    &k.file,
                    format!("{id} does not exist; cannot merge or replace"),
                ));
            }
            ([i], Behavior::Merge | Behavior::Replace) => {
                let old = &ra[*i];
                let mut labels = old.string_map("labels");
                labels.extend(res.string_map("labels"));
                let mut annotations = old.string_map("annotations");
                annotations.extend(res.string_map("annotations"));
                if res.behavior == Behavior::Merge {
                    for field in ["data", "binaryData"] {
                        let mut merged = old
                            .obj
                            .get(field)
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default();
                        if let Some(new) = res.obj.get(field).and_then(Value::as_object) {
                            merged.extend(new.clone());
                        }
                        if !merged.is_empty() {
                            res.obj[field] = Value::Object(merged);
                        }
                    }
                }
                let md = res.metadata_mut();
                for (field, m) in [("labels", labels), ("annotations", annotations)] {
                    if m.is_empty() {
                        md.remove(field);
                    } else {
                        md.insert(field.into(), Value::Object(m));
                    }
                }
                res.set_name(old.name());
                res.set_namespace(old.namespace());
                res.prev = old.prev.clone();
                res.prefixes = old.prefixes.clone();
                res.suffixes = old.suffixes.clone();
                res.needs_hash = res.needs_hash || old.needs_hash;
                // It has had the names of the one it replaces: the index
                // stays as it is.
                ra[*i] = res;
            }
            ([_], Behavior::Create) => {
                return Err(invalid(
                    &k.file,
                    format!("{id} already exists; behavior must be merge or replace"),
                ));
            }
            _ => {
                return Err(invalid(
                    &k.file,
                    format!("{id} matches more than one resource"),
                ));
            }
        }
    }
    Ok(())
}
