//! `stagesetctl tree NAME`: the stages in spec order and, under each, the
//! objects its StageInventory shards record (what the controller would
//! prune or tear down), read from the cluster.

use clap::Args;
use kube::ResourceExt;

use super::{Ctx, Outcome, fail};
use crate::reconcile::inventory;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  stagesetctl tree web\n  stagesetctl tree web -n shop")]
pub struct TreeArgs {
    /// The StageSet.
    pub name: String,
}

pub async fn run(ctx: &Ctx, args: &TreeArgs) -> Outcome {
    let ss = ctx.stageset(&args.name).await?;
    let records = inventory::read(&ctx.client, &ctx.namespace, &args.name)
        .await
        .map_err(|e| fail(format!("reading the inventory of {}: {e}", args.name)))?;
    let status = ss.status.as_ref();
    println!("StageSet {}/{}", ctx.namespace, ss.name_any());
    // Spec stages first, then stages still recorded but gone from the spec
    // (their objects are pruned by the next pass).
    let mut rows: Vec<(String, String)> = ss
        .spec
        .stages
        .iter()
        .map(|st| {
            let s = status.and_then(|s| s.stages.iter().find(|x| x.name == st.name));
            let phase = s
                .and_then(|x| x.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "Pending".into());
            let detail = match s.and_then(|x| x.applied_revision.as_deref()) {
                Some(r) if !r.is_empty() => format!("{phase}, revision {r}"),
                _ => phase,
            };
            (st.name.clone(), detail)
        })
        .collect();
    for name in records.keys() {
        if !ss.spec.stages.iter().any(|s| &s.name == name) {
            rows.push((name.clone(), "removed from the spec".into()));
        }
    }
    let count = rows.len();
    for (i, (stage, detail)) in rows.iter().enumerate() {
        let last = i + 1 == count;
        println!(
            "{} stage {stage}  ({detail})",
            if last { "└──" } else { "├──" }
        );
        let indent = if last { "    " } else { "│   " };
        match records.get(stage) {
            None => println!("{indent}└── (no inventory recorded)"),
            Some(rec) => {
                let objects = rec.objects();
                let malformed = rec.malformed();
                if objects.is_empty() && malformed == 0 {
                    println!("{indent}└── (no objects)");
                }
                for (j, o) in objects.iter().enumerate() {
                    let last_obj = j + 1 == objects.len() && malformed == 0;
                    println!(
                        "{indent}{} {}",
                        if last_obj { "└──" } else { "├──" },
                        o.subject()
                    );
                }
                if malformed > 0 {
                    println!(
                        "{indent}└── ({malformed} malformed entr{})",
                        if malformed == 1 { "y" } else { "ies" }
                    );
                }
            }
        }
    }
    Ok(())
}
