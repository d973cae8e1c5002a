//! `supervisor export kubernetes`: the manifests (loaded and checked as
//! `check` does; refused on errors) as Kubernetes objects, on stdout as one
//! YAML stream or with `--out DIR` one file per object plus
//! `kustomization.yaml`. Warnings (what has no Kubernetes equivalent) go to
//! stderr. The mapping lives in `crate::export::kubernetes`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use super::check::{load_as_written, print_problems};
use super::{Exit, ManifestArgs};
use crate::export::kubernetes::{self, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub enum Target {
    /// Deployments, Services, NetworkPolicies and the in-pod manifests
    /// (a ConfigMap) for `kubectl apply` (docs/kubernetes.md).
    Kubernetes(KubernetesArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct KubernetesArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// The image every agent runs in (it holds `supervisor` and the agents'
    /// programs); `NAME=IMAGE` for one agent. Repeatable.
    #[arg(long = "image", value_name = "IMAGE|NAME=IMAGE")]
    pub images: Vec<String>,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Write one file per object and a `kustomization.yaml` here instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `yaml`: a multi-document stream; `json`: one `v1/List` of the objects
    /// (both accepted by `kubectl apply -f`). Files under `--out` are YAML.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: Format,
    /// `app.kubernetes.io/part-of` on every object.
    #[arg(long, default_value = "supervisor")]
    pub part_of: String,
    /// Paths under this directory (default: the current one) ...
    #[arg(long, value_name = "DIR")]
    pub source_root: Option<PathBuf>,
    /// ... are under this directory in the image.
    #[arg(long, default_value = "/app", value_name = "DIR")]
    pub app_dir: String,
    /// `${SUPERVISOR_BIN_DIR}` in the manifests: where `supervisor` and the
    /// agent binaries are in the image.
    #[arg(long, default_value = "/usr/local/bin", value_name = "DIR")]
    pub bin_dir: String,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    match args.target {
        Target::Kubernetes(args) => kubernetes(args),
    }
}

fn kubernetes(args: KubernetesArgs) -> anyhow::Result<Exit> {
    let mut load = args.manifests.load_options();
    let mut environment: std::collections::HashMap<String, String> = std::env::vars().collect();
    environment.insert("SUPERVISOR_BIN_DIR".into(), args.bin_dir.clone());
    load.environment = Some(environment);
    let report = match load_as_written(&args.manifests.config_args()?, &load)? {
        Ok(report) => report,
        Err(exit) => return Ok(exit),
    };
    if report.has_errors() {
        print_problems(&report.problems);
        eprintln!("error: not exported: `supervisor check` finds errors in the manifests");
        return Ok(Exit::Problems);
    }
    let mut image = None;
    let mut images = BTreeMap::new();
    for text in &args.images {
        match text.split_once('=') {
            Some((agent, value)) => {
                images.insert(agent.to_string(), value.to_string());
            }
            None => image = Some(text.clone()),
        }
    }
    let source_root = match args.source_root {
        Some(dir) => {
            std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))?
        }
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let export = match kubernetes::export(
        &report.manifest,
        &Options {
            namespace: args.namespace.clone(),
            image,
            images,
            part_of: args.part_of,
            source_root,
            app_dir: args.app_dir,
        },
    ) {
        Ok(export) => export,
        Err(error) => {
            for problem in &error.problems {
                eprintln!("error[export]: {problem}");
            }
            return Ok(Exit::Problems);
        }
    };
    for warning in &export.warnings {
        eprintln!("warning[no_equivalent]: {warning}");
    }
    match &args.out {
        None => match args.format {
            Format::Yaml => print!(
                "{}",
                kubernetes::to_yaml(&export.objects).context("writing YAML")?
            ),
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": export.objects,
                }))
                .context("writing JSON")?
            ),
        },
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let names = export.file_names();
            for (name, object) in names.iter().zip(&export.objects) {
                let path = dir.join(name);
                let text = serde_saphyr::to_string(object).context("writing YAML")?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let path = dir.join("kustomization.yaml");
            let text = serde_saphyr::to_string(&export.kustomization(&names, &args.namespace))
                .context("writing YAML")?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} objects and kustomization.yaml to {} (`kubectl apply -k {}`)",
                names.len(),
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(Exit::Ok)
}
