//! Which credentials the S3 rollback store signs with (operations.md §6.6),
//! decided once at start-up from the flags, the environment and the shared
//! credentials file:
//!
//! 1. `--rollback-store-s3-anonymous`: unsigned requests.
//! 2. `--rollback-store-s3-access-key`: those static keys (and session token).
//! 3. The environment: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//!    `AWS_SESSION_TOKEN`, also spelled `AWS_ACCESS_KEY` / `AWS_SECRET_KEY`
//!    (the chart's `existingSecret` lands here).
//! 4. The shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`), profile `AWS_PROFILE` or `default`.
//! 5. Web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`,
//!    exchanged at STS (`AWS_ENDPOINT_URL_STS`, else the regional endpoint).
//! 6. Container credential endpoints (`AWS_CONTAINER_CREDENTIALS_*`).
//! 7. EC2 instance metadata.
//!
//! object_store implements the exchanges of 5–7; the environment aliases and
//! the shared file are read here. Nothing here logs a secret.

use std::path::PathBuf;

use crate::config::Secret;

/// A static key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticKeys {
    pub key_id: String,
    pub secret: Secret,
    pub token: Option<Secret>,
}

/// The credential source chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    /// Keys from the flags, the environment or the shared file; `origin`
    /// says which (for the start-up log).
    Static {
        keys: StaticKeys,
        origin: String,
    },
    /// IRSA: a projected token exchanged for temporary credentials.
    WebIdentity {
        token_file: String,
        role_arn: String,
        session_name: Option<String>,
        sts_endpoint: Option<String>,
    },
    /// An ECS/EKS container credential endpoint.
    Container {
        relative_uri: Option<String>,
        full_uri: Option<String>,
        token_file: Option<String>,
    },
    /// EC2 instance metadata.
    InstanceMetadata,
}

impl Credentials {
    /// What the start-up log says about the source (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Credentials::Anonymous => "anonymous".into(),
            Credentials::Static { origin, .. } => format!("static keys from {origin}"),
            Credentials::WebIdentity { role_arn, .. } => format!("web identity, role {role_arn}"),
            Credentials::Container { .. } => "container credentials endpoint".into(),
            Credentials::InstanceMetadata => "instance metadata".into(),
        }
    }
}

/// The flag side of the choice.
#[derive(Clone, Debug, Default)]
pub struct FlagCredentials {
    pub anonymous: bool,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// Chooses the credentials (see the module documentation). `env` reads the
/// environment; `home` is the home directory for the default shared file.
pub fn choose(
    flags: &FlagCredentials,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Result<Credentials, String> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if flags.anonymous {
        return Ok(Credentials::Anonymous);
    }
    if let Some(key_id) = flags.access_key.as_ref() {
        let Some(secret) = flags.secret_key.clone() else {
            return Err(
                "--rollback-store-s3-access-key is set but --rollback-store-s3-secret-key is empty"
                    .into(),
            );
        };
        return Ok(Credentials::Static {
            keys: StaticKeys {
                key_id: key_id.expose().to_string(),
                secret,
                token: flags.session_token.clone(),
            },
            origin: "the --rollback-store-s3-* flags".into(),
        });
    }
    let id = var("AWS_ACCESS_KEY_ID").or_else(|| var("AWS_ACCESS_KEY"));
    let secret = var("AWS_SECRET_ACCESS_KEY").or_else(|| var("AWS_SECRET_KEY"));
    match (id, secret) {
        (Some(key_id), Some(secret)) => {
            return Ok(Credentials::Static {
                keys: StaticKeys {
                    key_id,
                    secret: Secret::new(secret),
                    token: var("AWS_SESSION_TOKEN").map(Secret::new),
                },
                origin: "the environment".into(),
            });
        }
        (Some(_), None) => {
            return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into());
        }
        (None, Some(_)) => {
            return Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into());
        }
        (None, None) => {}
    }
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".aws").join("credentials")));
    if let Some(file) = file {
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                if let Some(keys) = shared_file_profile(&text, &profile)? {
                    return Ok(Credentials::Static {
                        keys,
                        origin: format!("{} (profile {profile})", file.display()),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", file.display())),
        }
    }
    if let (Some(token_file), Some(role_arn)) =
        (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
    {
        return Ok(Credentials::WebIdentity {
            token_file,
            role_arn,
            session_name: var("AWS_ROLE_SESSION_NAME"),
            sts_endpoint: var("AWS_ENDPOINT_URL_STS"),
        });
    }
    let relative_uri = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    let full_uri = var("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if relative_uri.is_some() || full_uri.is_some() {
        return Ok(Credentials::Container {
            relative_uri,
            full_uri,
            token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        });
    }
    Ok(Credentials::InstanceMetadata)
}

/// The keys of `profile` in an AWS shared credentials file (INI: `[name]`
/// sections, `key = value` lines, `#`/`;` comments). `Ok(None)` when the
/// profile is absent; an error when it is there but incomplete.
pub fn shared_file_profile(text: &str, profile: &str) -> Result<Option<StaticKeys>, String> {
    let mut current: Option<String> = None;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            if name.trim() == profile {
                found = true;
            }
            continue;
        }
        if current.as_deref() != Some(profile) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    if !found {
        return Ok(None);
    }
    match (id, secret) {
        (Some(key_id), Some(secret)) if !key_id.is_empty() && !secret.is_empty() => {
            Ok(Some(StaticKeys {
                key_id,
                secret: Secret::new(secret),
                token: token.filter(|t| !t.is_empty()).map(Secret::new),
            }))
        }
        _ => Err(format!(
            "the shared credentials file's profile {profile:?} lacks aws_access_key_id or aws_secret_access_key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn keys(c: &Credentials) -> (&str, &str, Option<&str>) {
        match c {
            Credentials::Static { keys, .. } => (
                keys.key_id.as_str(),
                keys.secret.expose(),
                keys.token.as_ref().map(Secret::expose),
            ),
            other => panic!("not static: {other:?}"),
        }
    }

    #[test]
    fn flags_win_and_anonymous_wins_over_flags() {
        let flags = FlagCredentials {
            anonymous: false,
            access_key: Some(Secret::new("AKFLAG")),
            secret_key: Some(Secret::new("flag-secret")),
            session_token: Some(Secret::new("tok")),
        };
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AKENV"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let c = choose(&flags, &e, None).unwrap();
        assert_eq!(keys(&c), ("AKFLAG", "flag-secret", Some("tok")));
        let anonymous = FlagCredentials {
            anonymous: true,
            ..flags
        };
        assert_eq!(
            choose(&anonymous, &e, None).unwrap(),
            Credentials::Anonymous
        );
        let half = FlagCredentials {
            access_key: Some(Secret::new("AK")),
            ..FlagCredentials::default()
        };
        assert!(choose(&half, &e, None).is_err());
    }

    #[test]
    fn environment_and_its_aliases() {
        let flags = FlagCredentials::default();
        let c = choose(
            &flags,
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "sec"),
                ("AWS_SESSION_TOKEN", "tok"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(keys(&c), ("AKID", "sec", Some("tok")));
        let c = choose(
            &flags,
            &env(&[("AWS_ACCESS_KEY", "AKOLD"), ("AWS_SECRET_KEY", "old")]),
            None,
        )
        .unwrap();
        assert_eq!(keys(&c), ("AKOLD", "old", None));
        assert!(choose(&flags, &env(&[("AWS_ACCESS_KEY_ID", "AK")]), None).is_err());
        assert!(choose(&flags, &env(&[("AWS_SECRET_KEY", "x")]), None).is_err());
    }

    #[test]
    fn shared_file_then_web_identity_then_container_then_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir_all(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "# comment\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = def\n\n[ops]\naws_access_key_id=AKOPS\naws_secret_access_key=ops\naws_session_token=t\n",
        )
        .unwrap();
        let flags = FlagCredentials::default();
        let home = Some(dir.path().to_path_buf());
        let c = choose(&flags, &env(&[]), home.clone()).unwrap();
        assert_eq!(keys(&c), ("AKDEF", "def", None));
        let c = choose(&flags, &env(&[("AWS_PROFILE", "ops")]), home.clone()).unwrap();
        assert_eq!(keys(&c), ("AKOPS", "ops", Some("t")));
        // A profile that is not in the file falls through to web identity.
        let irsa = env(&[
            ("AWS_PROFILE", "absent"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_ENDPOINT_URL_STS", "https://127.0.0.1:9999"),
        ]);
        assert_eq!(
            choose(&flags, &irsa, home.clone()).unwrap(),
            Credentials::WebIdentity {
                token_file: "/var/run/secrets/eks/token".into(),
                role_arn: "arn:aws:iam::1:role/r".into(),
                session_name: None,
                sts_endpoint: Some("https://127.0.0.1:9999".into()),
            }
        );
        let container = env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds")]);
        assert!(matches!(
            choose(&flags, &container, None).unwrap(),
            Credentials::Container {
                relative_uri: Some(_),
                ..
            }
        ));
        assert_eq!(
            choose(&flags, &env(&[]), None).unwrap(),
            Credentials::InstanceMetadata
        );
        // An explicit file wins over the home directory's.
        let other = dir.path().join("other");
        std::fs::write(
            &other,
            "[default]\naws_access_key_id=AKX\naws_secret_access_key=x\n",
        )
        .unwrap();
        let c = choose(
            &flags,
            &env(&[("AWS_SHARED_CREDENTIALS_FILE", other.to_str().unwrap())]),
            home,
        )
        .unwrap();
        assert_eq!(keys(&c), ("AKX", "x", None));
    }

    #[test]
    fn incomplete_profiles_are_errors() {
        assert!(shared_file_profile("[default]\naws_access_key_id=A\n", "default").is_err());
        assert_eq!(shared_file_profile("[other]\n", "default").unwrap(), None);
    }

    #[test]
    fn descriptions_never_carry_secrets() {
        let c = Credentials::Static {
            keys: StaticKeys {
                key_id: "AKID".into(),
                secret: Secret::new("very-secret"),
                token: None,
            },
            origin: "the environment".into(),
        };
        assert!(!c.describe().contains("very-secret"));
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
