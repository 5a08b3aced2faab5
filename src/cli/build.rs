//! `stagesetctl build NAME` (delivery.md §6.3): every selected stage
//! rendered as the controller renders it, printed as multi-document YAML
//! with Secret values masked.

use clap::Args;

use super::render::{Masker, Renderer, SourceDirs};
use super::{Ctx, Failure, Outcome, fail, select_stages};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl build web\n  stagesetctl build web --stage prod\n  stagesetctl build web --source-dir ./deploy\n  stagesetctl build web --source-dir prod=./deploy/prod --show-secrets"
)]
pub struct BuildArgs {
    /// The StageSet.
    pub name: String,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Print Secret values instead of masking them.
    #[arg(long)]
    pub show_secrets: bool,
}

/// The render flags of build, diff and apply.
#[derive(Args, Debug, Clone, Default)]
pub struct RenderArgs {
    /// Stages to render (repeatable or comma-separated; default: all).
    #[arg(long, value_name = "STAGE")]
    pub stage: Vec<String>,
    /// Render from a local directory instead of the fetched artifact:
    /// `STAGE=PATH` for one stage, a bare PATH for the others (repeatable).
    #[arg(long, value_name = "[STAGE=]PATH")]
    pub source_dir: Vec<String>,
    /// Refuse sourceRefs to other namespaces, like the controller's
    /// --no-cross-namespace-refs.
    #[arg(long)]
    pub no_cross_namespace_refs: bool,
    /// Act as the tenant: read the decryption keys as the StageSet's
    /// ServiceAccount, and (diff, apply) dry-run or apply as each stage's
    /// effective ServiceAccount, through impersonation (you need the
    /// `impersonate` permission).
    #[arg(long)]
    pub as_tenant: bool,
}

impl RenderArgs {
    /// Parses --source-dir.
    pub fn source_dirs(&self) -> Result<SourceDirs, Failure> {
        SourceDirs::parse(&self.source_dir)
    }

    /// The renderer of `ss` these flags ask for (`dirs` from
    /// [`RenderArgs::source_dirs`], parsed before the cluster is asked).
    pub async fn renderer<'a>(
        &self,
        ctx: &'a Ctx,
        ss: &'a crate::api::StageSet,
        dirs: SourceDirs,
    ) -> Result<Renderer<'a>, Failure> {
        Renderer::new(ctx, ss, dirs, self.no_cross_namespace_refs, self.as_tenant).await
    }
}

pub async fn run(ctx: &Ctx, args: &BuildArgs) -> Outcome {
    let dirs = args.render.source_dirs()?;
    let ss = ctx.stageset(&args.name).await?;
    let stages = select_stages(&ss, &args.render.stage)?;
    let renderer = args.render.renderer(ctx, &ss, dirs).await?;
    let mut masker = Masker::new();
    let mut docs = Vec::new();
    for stage in stages {
        let rendered = renderer.render(stage).await?;
        for mut obj in rendered.objects {
            if !args.show_secrets {
                masker.mask(&mut obj);
            }
            docs.push(obj);
        }
    }
    let text = kustomize::yaml::to_string(&docs);
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| fail(format!("writing the output: {e}")))?;
    Ok(())
}
