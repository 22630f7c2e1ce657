//! The Kubernetes manifests in `deploy/kubernetes/` (the CronJob, the worker's Deployment and
//! Service, and any added later) validate against a named Kubernetes version, strictly (no
//! unknown field), with `kubernetes-validate` from PyPI, which works offline. It is installed in
//! a virtual environment under the target directory; without python3 and venv the test says so
//! and passes, unless `CI=true` or `PCSYNC_REQUIRE_KUBERNETES_VALIDATE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

const KUBERNETES: &str = "1.33.0";
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("PCSYNC_REQUIRE_KUBERNETES_VALIDATE").is_ok_and(|v| v == "1")
}

fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            manifests(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// The validator, installed once in a virtual environment.
fn validator() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-validate");
    let exe = venv.join("bin/kubernetes-validate");
    if exe.exists() {
        return Some(exe);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return None;
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VALIDATOR,
        ])
        .status()
        .is_ok_and(|s| s.success());
    installed.then_some(exe)
}

fn validate(exe: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(exe)
        .args(["-k", KUBERNETES, "--strict"])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_manifest_validates_against_kubernetes() {
    let Some(exe) = validator() else {
        assert!(
            !required(),
            "kubernetes-validate could not be installed (python3 with venv and PyPI needed)"
        );
        eprintln!("skipped: kubernetes-validate could not be installed");
        return;
    };
    let mut files = Vec::new();
    manifests(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes"),
        &mut files,
    );
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    for expected in ["cronjob.yaml", "deployment.yaml", "service.yaml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let (ok, said) = validate(&exe, &files);
    assert!(
        ok,
        "manifests do not validate against Kubernetes {KUBERNETES}:\n{said}"
    );
    assert_eq!(
        said.matches(" passed for resource ").count(),
        files.len(),
        "every manifest checked:\n{said}"
    );
    // The validator refuses what Kubernetes would: a field that does not exist.
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: { name: x }\nspec:\n  ports: [{ port: 80 }]\n  selctor: { app: x }\n",
    )
    .expect("write");
    let (ok, said) = validate(&exe, &[bad]);
    assert!(!ok, "a misspelt field is refused:\n{said}");
}
