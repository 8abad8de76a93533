//! `nudge-operator crds`: writes the CustomResourceDefinitions into `deploy/crds/`.
//! (`nudge-operator crds --stdout` prints them instead, for `kubectl apply -f -`.)

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["crds"] => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in nudge_operator::render()? {
                std::fs::write(dir.join(&name), yaml)?;
                println!("wrote deploy/crds/{name}");
            }
            Ok(())
        }
        ["crds", "--stdout"] => {
            for (_, yaml) in nudge_operator::render()? {
                println!("---\n{yaml}");
            }
            Ok(())
        }
        _ => anyhow::bail!("usage: nudge-operator crds [--stdout]"),
    }
}
