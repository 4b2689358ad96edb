//! Item 6: the gate's check and the store's load time against the number of certificates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tls::{ServerPki, ServerPkiOptions, VerifiedClient};
use trust::fsutil::FileMode;
use trust::{DataDir, TrustStore};

use super::{ratio, Plan};
use crate::env::Env;
use crate::stats::{fmt_dur, fmt_ms, Row, Samples};
use crate::tlsmem;

/// Item 6: the gate's check and the store's load time against the number of trusted
/// certificates.
pub fn trust_scale(plan: &Plan, env: &Env) -> Result<Vec<Row>> {
    let pki = ServerPki::load_or_create(&DataDir::new(&env.data), ServerPkiOptions::default())?;
    let (_, client) = tlsmem::handshake(
        &tls::server_config(tls::ServerCertResolver::new(&pki)?)?,
        &env.client_tls(&env.data)?,
    )?;
    let client: VerifiedClient = client.context("no client certificate")?;
    let fp = client.fingerprint();

    struct Size {
        n: usize,
        file_mb: f64,
        made: Duration,
        load: Samples,
        read: Samples,
        gate: multipassd::gate::Gate,
        bundle: Arc<trust::Bundle>,
        check: Samples,
        lookup: Samples,
    }
    let mut sizes = Vec::new();
    for &n in &plan.store_sizes {
        let dir = env.path().join(format!("scale-{n}"));
        trust::fsutil::ensure_dir(&dir, 0o700)?;
        let path = dir.join("multipass_client_certs.pem");
        let t = Instant::now();
        let text = crate::synth::store_text(
            n.saturating_sub(1),
            std::slice::from_ref(&env.identity.cert),
        )?;
        std::fs::write(&path, &text)?;
        let made = t.elapsed();
        drop(text);

        // Load: a fresh store object parses the whole file; the floor is reading its bytes.
        let reps = if n >= 100_000 { 3 } else { 5 };
        let (mut load, mut read) = (Samples::default(), Samples::default());
        for _ in 0..reps {
            let t = Instant::now();
            let bytes = std::fs::read(&path)?;
            read.push(t.elapsed());
            drop(bytes);
            let store = TrustStore::new(&path, FileMode::PRIVATE);
            let t = Instant::now();
            let bundle = store.current()?;
            load.push(t.elapsed());
            ensure!(
                bundle.len() == n.max(1),
                "store holds {} of {n}",
                bundle.len()
            );
        }
        let store = Arc::new(TrustStore::new(&path, FileMode::PRIVATE));
        let bundle = store.current()?;
        let admin = trust::access::AdminPolicy::new(None);
        let gate = multipassd::gate::Gate::new(multipassd::gate::Parts::in_dir(
            store,
            &trust::DataDir::new(dir),
            std::sync::Arc::new(admin.clone()),
            std::sync::Arc::new(multipassd::socket::SocketPolicy::new(None, admin)),
        ));
        sizes.push(Size {
            n,
            file_mb: std::fs::metadata(&path)?.len() as f64 / 1e6,
            made,
            load,
            read,
            gate,
            bundle,
            check: Samples::default(),
            lookup: Samples::default(),
        });
    }

    // The gate's check as every gated RPC makes it, `Gate::is_trusted` (stat of the file, lock,
    // hash lookup), and the hash lookup alone; batches of every size interleaved, so that drift
    // on a shared machine hits all sizes alike.
    const BATCH: u32 = 1000;
    for _ in 0..(plan.gate_checks / BATCH as usize).max(1) {
        for size in &mut sizes {
            let t = Instant::now();
            for _ in 0..BATCH {
                ensure!(
                    size.gate.is_trusted(std::hint::black_box(&client))?,
                    "not trusted"
                );
            }
            size.check.push(t.elapsed() / BATCH);
            let t = Instant::now();
            for _ in 0..BATCH {
                ensure!(
                    size.bundle.contains(std::hint::black_box(&fp)),
                    "not trusted"
                );
            }
            size.lookup.push(t.elapsed() / BATCH);
        }
    }

    let mut rows = Vec::new();
    let base = sizes[0].check.median();
    for size in &sizes {
        let (check, lookup, n) = (size.check.median(), size.lookup.median(), size.n);
        let flat = ratio(check, base);
        rows.push(
            Row::info(
                6,
                format!("gate check, {n} trusted (stat + lock + lookup; lookup alone)"),
                format!("{} ({})", fmt_dur(check), fmt_dur(lookup)),
            )
            .floor(format!("{} at {}", fmt_dur(base), sizes[0].n))
            .ratio(flat)
            .target("flat (≤ 1.5× the smallest)", flat <= 1.5),
        );
        let mut row = Row::info(
            6,
            format!(
                "store load, {n} trusted ({:.1} MB file, synthesized in {})",
                size.file_mb,
                fmt_ms(size.made)
            ),
            fmt_ms(size.load.median()),
        )
        .floor(format!("{} reading the file", fmt_ms(size.read.median())))
        .ratio(ratio(size.load.median(), size.read.median()));
        if n == 100_000 {
            let r = ratio(size.load.median(), size.read.median());
            row = row.target(
                "≤ 3× reading the file, < 1 s",
                r <= 3.0 && size.load.median() < Duration::from_secs(1),
            );
        }
        rows.push(row);
    }
    drop(sizes);
    for &n in &plan.store_sizes {
        let _ = std::fs::remove_dir_all(env.path().join(format!("scale-{n}")));
    }
    Ok(rows)
}
