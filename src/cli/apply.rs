//! `stagesetctl apply NAME` (delivery.md §6.5): renders the selected stages
//! and applies them with the caller's credentials through the controller's
//! own apply (server-side apply, field manager, labels, staging, conflict
//! handling). It never runs actions, migrations, gates, windows, image
//! verification, inventory or prune: the next controller pass does those.

use std::time::{Duration, Instant};

use clap::Args;
use kube::api::{Api, DynamicObject};

use super::build::RenderArgs;
use super::{Ctx, Failure, Outcome, api_error, fail, select_stages};
use crate::reconcile::apply::{self, Change};
use crate::reconcile::health::{self, Health};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl apply web --stage dev\n  stagesetctl apply web --source-dir ./deploy --wait --timeout 2m"
)]
pub struct ApplyArgs {
    /// The StageSet.
    pub name: String,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Wait until every applied object of a stage is healthy before the next.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits per stage (Go duration).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

pub async fn run(ctx: &Ctx, args: &ApplyArgs) -> Outcome {
    let timeout = crate::duration::GoDuration::parse(&args.timeout)
        .ok()
        .and_then(|d| d.to_std())
        .ok_or_else(|| Failure::Usage(format!("--timeout: invalid duration {:?}", args.timeout)))?;
    let dirs = args.render.source_dirs()?;
    let ss = ctx.stageset(&args.name).await?;
    let stages = select_stages(&ss, &args.render.stage)?;
    let renderer = args.render.renderer(ctx, &ss, dirs).await?;
    let applyset = super::diff::applyset_mode(ctx, &ss).await?;
    let mut total = 0;
    for stage in &stages {
        let rendered = renderer.render(stage).await?;
        let mut objects = rendered.objects;
        let token = super::diff::prepare(&ss, stage, &mut objects, applyset)?;
        let options = apply::ApplyOptions {
            force_token: Some(token),
            ..apply::ApplyOptions::default()
        };
        println!("stage \"{}\":", stage.name);
        let writer = if args.render.as_tenant {
            super::render::tenant_client(ctx, &ss, Some(stage)).await?
        } else {
            ctx.client.clone()
        };
        let changes = apply::apply(&ctx.clients, &writer, objects, &options)
            .await
            .map_err(|e| fail(format!("stage \"{}\": {e}", stage.name)))?;
        for c in &changes {
            println!("  {} {}", c.action.as_str(), c.object.subject());
        }
        total += changes.len();
        if args.wait {
            wait_healthy(ctx, &stage.name, &changes, timeout).await?;
        }
    }
    println!("applied {total} object(s) across {} stage(s)", stages.len());
    Ok(())
}

/// Polls every object of the change set until all are Current; a Failed
/// object or the deadline is an error.
async fn wait_healthy(ctx: &Ctx, stage: &str, changes: &[Change], timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for c in changes {
            let r = &c.object;
            let res = ctx
                .clients
                .resource(&r.api_version, &r.kind)
                .await
                .map_err(|e| fail(format!("{}: {e}", r.subject())))?;
            let api: Api<DynamicObject> = if res.namespaced {
                Api::namespaced_with(ctx.client.clone(), &r.namespace, &res.api)
            } else {
                Api::all_with(ctx.client.clone(), &res.api)
            };
            let live = api
                .get_opt(&r.name)
                .await
                .map_err(|e| fail(format!("reading {}: {}", r.subject(), api_error(&e))))?;
            let h = match live {
                None => Health::InProgress("not found".into()),
                Some(o) => health::compute(
                    &serde_json::to_value(&o).unwrap_or_default(),
                    jiff::Timestamp::now(),
                ),
            };
            match h {
                Health::Current => {}
                Health::Failed(why) => {
                    return Err(fail(format!(
                        "stage \"{stage}\": {} failed: {why}",
                        r.subject()
                    )));
                }
                other => waiting.push(format!("{} ({other})", r.subject())),
            }
        }
        if waiting.is_empty() {
            println!("  stage \"{stage}\" is healthy");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "stage \"{stage}\": timed out after {}s waiting for {}",
                timeout.as_secs(),
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
