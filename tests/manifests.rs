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

/// The plain manifests under `dir`; kustomize directories (a `kustomization.yaml`) are
/// rendered apart, see [`overlays`].
fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    if dir.join("kustomization.yaml").exists() {
        return;
    }
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            manifests(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// The validator, installed once in a virtual environment (once per test binary too: its tests
/// run in parallel and would build the same environment at once).
fn validator() -> Option<PathBuf> {
    static INSTALLED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install_validator).clone()
}

fn install_validator() -> Option<PathBuf> {
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

/// The per-tenant overlays in `deploy/kubernetes/tenants/` (every directory but `base`).
fn overlays() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/tenants");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes/tenants")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").exists() && !p.ends_with("base"))
        .collect();
    out.sort();
    out
}

/// An overlay as `kubectl apply -k` would apply it; `None` without a kubectl that has
/// kustomize (no package registry here carries a current one; the machine's kubectl does).
fn kustomize(dir: &Path) -> Option<String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn every_tenant_overlay_is_a_cronjob_of_its_own_that_validates() {
    let overlays = overlays();
    assert!(overlays.len() >= 2, "{overlays:?}");
    let Some(exe) = validator() else {
        assert!(
            !required(),
            "kubernetes-validate could not be installed (python3 with venv and PyPI needed)"
        );
        eprintln!("skipped: kubernetes-validate could not be installed");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut rendered = Vec::new();
    let mut names = std::collections::HashSet::new();
    for overlay in &overlays {
        let tenant = overlay
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .expect("a name");
        let Some(yaml) = kustomize(overlay) else {
            eprintln!("skipped: no kubectl with kustomize to render the tenant overlays");
            return;
        };
        // The tenant's own job: its name, its tenant name, its Secret and customer list.
        assert!(yaml.contains("kind: CronJob"), "{yaml}");
        assert!(yaml.contains(&format!("name: pcsync-{tenant}\n")), "{yaml}");
        assert!(
            yaml.contains(&format!(
                "- name: PCSYNC__AUTH__TENANT_NAME\n              value: {tenant}\n"
            )),
            "{yaml}"
        );
        assert_eq!(
            yaml.matches("PCSYNC__AUTH__TENANT_NAME").count(),
            1,
            "{yaml}"
        );
        assert!(
            yaml.contains(&format!("secretName: pcsync-{tenant}\n")),
            "{yaml}"
        );
        assert!(
            yaml.contains(&format!("name: pcsync-customers-{tenant}\n")),
            "{yaml}"
        );
        assert!(names.insert(tenant.clone()));
        let file = dir.path().join(format!("{tenant}.yaml"));
        std::fs::write(&file, yaml).expect("write");
        rendered.push(file);
    }
    let (ok, said) = validate(&exe, &rendered);
    assert!(
        ok,
        "the tenant overlays do not validate against Kubernetes {KUBERNETES}:\n{said}"
    );
    assert_eq!(
        said.matches(" passed for resource ").count(),
        rendered.len(),
        "every overlay checked:\n{said}"
    );
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
