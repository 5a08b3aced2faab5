//! The render engine shared by `build`, `diff` and `apply` (delivery.md
//! §6.1): each stage's source resolved and fetched, its SOPS files
//! decrypted and its post-build variables read, all with the caller's
//! credentials, then built by the library exactly as the controller builds.
//! Also the Secret masking of everything the CLI prints.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::Value;

use super::{Ctx, Failure, api_error, fail};
use crate::api::{Stage, StageSet, SubstituteKind};
use crate::reconcile::artifact::Fetcher;
use crate::reconcile::{build, decrypt, source, substitute};

/// `--source-dir [STAGE=]PATH` values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceDirs {
    /// The bare PATH: stages without their own entry.
    pub default: Option<PathBuf>,
    /// STAGE=PATH entries.
    pub stages: BTreeMap<String, PathBuf>,
}

impl SourceDirs {
    /// Parses the repeatable flag; a second bare PATH or a second entry for
    /// one stage is a usage error.
    pub fn parse(values: &[String]) -> Result<SourceDirs, Failure> {
        let mut dirs = SourceDirs::default();
        for v in values {
            // `STAGE=PATH` when the part before the first `=` looks like a
            // stage name (no path separator); anything else is a bare PATH.
            match v.split_once('=') {
                Some((stage, path)) if !stage.is_empty() && !stage.contains('/') => {
                    if dirs
                        .stages
                        .insert(stage.to_string(), PathBuf::from(path))
                        .is_some()
                    {
                        return Err(Failure::Usage(format!(
                            "--source-dir given twice for stage {stage:?}"
                        )));
                    }
                }
                _ => {
                    if dirs.default.replace(PathBuf::from(v)).is_some() {
                        return Err(Failure::Usage(
                            "--source-dir: only one PATH without a stage may be given".into(),
                        ));
                    }
                }
            }
        }
        Ok(dirs)
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.stages.is_empty()
    }

    /// The directory replacing `stage`'s artifact, if any.
    pub fn for_stage(&self, stage: &str) -> Option<&PathBuf> {
        self.stages.get(stage).or(self.default.as_ref())
    }

    /// Every named stage must exist.
    pub fn check(&self, ss: &StageSet) -> Result<(), Failure> {
        for name in self.stages.keys() {
            if !ss.spec.stages.iter().any(|s| &s.name == name) {
                return Err(fail(format!(
                    "--source-dir names stage {name:?}, which StageSet {} does not have",
                    ss.name_any()
                )));
            }
        }
        Ok(())
    }
}

/// One rendered stage.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub stage: String,
    /// The source revision ("" for a local render).
    pub revision: String,
    pub objects: Vec<Value>,
    /// The artifact's (or directory's) files, decrypted.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Renders stages of one StageSet with the caller's identity.
pub struct Renderer<'a> {
    ctx: &'a Ctx,
    ss: &'a StageSet,
    dirs: SourceDirs,
    no_cross_namespace: bool,
    fetcher: Fetcher,
    /// The decryption keys, read once (None: the StageSet sets no
    /// decryption; Err: they could not be read).
    keys: Option<Result<decrypt::Keys, String>>,
}

impl<'a> Renderer<'a> {
    /// `as_tenant`: the decryption keys are read as the StageSet's
    /// ServiceAccount (impersonated) instead of as the caller.
    pub async fn new(
        ctx: &'a Ctx,
        ss: &'a StageSet,
        dirs: SourceDirs,
        no_cross_namespace: bool,
        as_tenant: bool,
    ) -> Result<Renderer<'a>, Failure> {
        dirs.check(ss)?;
        let keys = match ss
            .spec
            .decryption
            .as_ref()
            .and_then(|d| d.secret_ref.as_ref())
        {
            None => None,
            Some(r) => {
                let reader = if as_tenant {
                    tenant_client(ctx, ss, None).await?
                } else {
                    ctx.client.clone()
                };
                Some(read_keys(&reader, &ss.namespace().unwrap_or_default(), &r.name).await)
            }
        };
        Ok(Renderer {
            ctx,
            ss,
            dirs,
            no_cross_namespace,
            // The caller fetches from their own machine: loopback artifact
            // servers (a port-forward, `stageset-controller dev`) are allowed;
            // the digest check and the size caps stay.
            fetcher: Fetcher::new(true),
            keys,
        })
    }

    /// Renders one stage: no stage, owner or ApplySet labels yet.
    pub async fn render(&self, stage: &Stage) -> Result<Rendered, Failure> {
        let namespace = self.ss.namespace().unwrap_or_default();
        let (mut files, revision) = match self.dirs.for_stage(&stage.name) {
            Some(dir) => {
                let files = build::read_dir(dir)
                    .map_err(|e| fail(format!("stage \"{}\": --source-dir {e}", stage.name)))?;
                if files.is_empty() {
                    return Err(fail(format!(
                        "stage \"{}\": --source-dir {} is empty",
                        stage.name,
                        dir.display()
                    )));
                }
                (files, String::new())
            }
            None => {
                let resolved = source::resolve(
                    &self.ctx.clients,
                    &stage.name,
                    &namespace,
                    &stage.source_ref,
                    self.no_cross_namespace,
                )
                .await
                .map_err(|e| fail(format!("{}: {}", e.reason, e.message)))?;
                let artifact = self
                    .fetcher
                    .fetch(&resolved.url, &resolved.digest)
                    .await
                    .map_err(|e| {
                        fail(format!(
                            "stage \"{}\": fetching the artifact of {}: {e}",
                            stage.name, resolved.key
                        ))
                    })?;
                (artifact.files, resolved.revision)
            }
        };
        let keys = match &self.keys {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => return Err(fail(format!("stage \"{}\": {e}", stage.name))),
        };
        let dir = stage.path.as_deref().unwrap_or("./");
        let leftovers = decrypt::decrypt_for_stage(&mut files, keys, dir).map_err(|e| {
            if keys.is_some() {
                fail(format!("stage \"{}\": {e}", stage.name))
            } else {
                fail(format!(
                    "stage \"{}\": {e}: the file is SOPS-encrypted, but the StageSet sets no spec.decryption",
                    stage.name
                ))
            }
        })?;
        let vars = self.vars(stage).await?;
        let patches = stage.patches.as_deref().unwrap_or_default();
        let mut objects = build::render(&files, dir, patches, vars.as_ref())
            .map_err(|e| fail(format!("stage \"{}\": {e}", stage.name)))?;
        if stage.apply_helm_hook_resources == Some(false) {
            objects.retain(|o| o.pointer("/metadata/annotations/helm.sh~1hook").is_none());
        }
        if let Some(subject) = decrypt::ciphertext_in(&objects) {
            let why = match leftovers.first {
                Some(e) => e.to_string(),
                None if keys.is_none() => "the StageSet sets no spec.decryption".into(),
                None => "a value was not decrypted".into(),
            };
            return Err(fail(format!(
                "stage \"{}\": {subject} holds SOPS-encrypted data ({why})",
                stage.name
            )));
        }
        Ok(Rendered {
            stage: stage.name.clone(),
            revision,
            objects,
            files,
        })
    }

    /// The stage's post-build variables: inline values, and the
    /// `substituteFrom` ConfigMaps and Secrets read as the caller.
    async fn vars(&self, stage: &Stage) -> Result<Option<substitute::Vars>, Failure> {
        let Some(post_build) = stage.post_build.as_ref() else {
            return Ok(None);
        };
        let namespace = self.ss.namespace().unwrap_or_default();
        let mut sources = Vec::new();
        for r in post_build.substitute_from.as_deref().unwrap_or_default() {
            let got = match r.kind {
                SubstituteKind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(self.ctx.client.clone(), &namespace)
                        .get_opt(&r.name)
                        .await
                        .map(|o| o.map(|cm| cm.data.unwrap_or_default()))
                }
                SubstituteKind::Secret => {
                    let secrets = ApiResource::erase::<Secret>(&());
                    Api::<DynamicObject>::namespaced_with(
                        self.ctx.client.clone(),
                        &namespace,
                        &secrets,
                    )
                    .get_opt(&r.name)
                    .await
                    .map(|o| {
                        o.map(|s| {
                            s.data
                                .get("data")
                                .and_then(Value::as_object)
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                })
                                .collect()
                        })
                    })
                }
            };
            let kind = match r.kind {
                SubstituteKind::ConfigMap => "ConfigMap",
                SubstituteKind::Secret => "Secret",
            };
            match got {
                Ok(Some(data)) => sources.push(substitute::VarSource {
                    kind: r.kind,
                    name: r.name.clone(),
                    data,
                }),
                Ok(None) if r.optional == Some(true) => {}
                Ok(None) => {
                    return Err(fail(format!(
                        "stage \"{}\": {kind} {namespace}/{} not found (postBuild.substituteFrom)",
                        stage.name, r.name
                    )));
                }
                Err(e) => {
                    return Err(fail(format!(
                        "stage \"{}\": reading {kind} {namespace}/{}: {}",
                        stage.name,
                        r.name,
                        api_error(&e)
                    )));
                }
            }
        }
        substitute::resolve_vars(&sources, post_build.substitute.as_ref())
            .map(Some)
            .map_err(|e| fail(format!("stage \"{}\": {e}", stage.name)))
    }
}

/// `--as-tenant`: a client impersonating the ServiceAccount the controller
/// would act as for `stage` (its own, else the StageSet's); without one named,
/// the caller's own client.
pub async fn tenant_client(
    ctx: &Ctx,
    ss: &StageSet,
    stage: Option<&Stage>,
) -> Result<kube::Client, Failure> {
    let sa = stage
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .or(ss.spec.service_account_name.as_deref())
        .filter(|s| !s.is_empty());
    ctx.clients
        .for_service_account(&ss.namespace().unwrap_or_default(), sa)
        .await
        .map_err(|e| fail(format!("--as-tenant: {e}")))
}

/// The SOPS keys from `spec.decryption.secretRef`, read as `reader`.
async fn read_keys(
    reader: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<decrypt::Keys, String> {
    let secret = Api::<Secret>::namespaced(reader.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| {
            format!(
                "reading the decryption Secret {namespace}/{name}: {}",
                api_error(&e)
            )
        })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    decrypt::Keys::from_secret_data(&data).map_err(|e| e.to_string())
}

/// Replaces the values of core/v1 Secrets by `<-- value not shown (#N)`,
/// equal values sharing N across everything one masker sees.
#[derive(Debug, Default)]
pub struct Masker {
    seen: HashMap<Vec<u8>, usize>,
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Masks one object in place (anything but a core/v1 Secret is left).
    pub fn mask(&mut self, obj: &mut Value) {
        let is_secret = obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
            && obj.get("kind").and_then(Value::as_str) == Some("Secret");
        if !is_secret {
            return;
        }
        for (field, encoded) in [("data", true), ("stringData", false)] {
            let Some(map) = obj.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            for v in map.values_mut() {
                let raw = match &*v {
                    Value::String(s) if encoded => base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .unwrap_or_else(|_| s.as_bytes().to_vec()),
                    Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_string().into_bytes(),
                };
                let next = self.seen.len() + 1;
                let n = *self.seen.entry(raw).or_insert(next);
                *v = Value::String(format!("<-- value not shown (#{n})"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn source_dirs() {
        let d = SourceDirs::parse(&["dev=./a".into(), "./b".into()]).unwrap();
        assert_eq!(d.for_stage("dev"), Some(&PathBuf::from("./a")));
        assert_eq!(d.for_stage("prod"), Some(&PathBuf::from("./b")));
        assert!(SourceDirs::parse(&["a".into(), "b".into()]).is_err());
        assert!(SourceDirs::parse(&["x=a".into(), "x=b".into()]).is_err());
        let p = SourceDirs::parse(&["./dir/with=sign".into()]).unwrap();
        assert_eq!(p.default, Some(PathBuf::from("./dir/with=sign")));
    }

    #[test]
    fn masking_numbers_equal_values_alike() {
        let mut m = Masker::new();
        let mut s = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"a": "c2VjcmV0", "b": "b3RoZXI="}, "stringData": {"c": "secret"}});
        m.mask(&mut s);
        assert_eq!(s["data"]["a"], "<-- value not shown (#1)");
        assert_eq!(s["data"]["b"], "<-- value not shown (#2)");
        assert_eq!(s["stringData"]["c"], "<-- value not shown (#1)");
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "x"}});
        m.mask(&mut cm);
        assert_eq!(cm["data"]["a"], "x");
    }
}
