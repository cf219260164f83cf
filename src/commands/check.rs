//! `cutover check`: every endpoint, hook program and router of the config, reached once.

use super::*;

/// `cutover check`: every endpoint and every router must answer.
pub async fn check(world: &World, json: bool) -> Result<i32> {
    #[derive(Serialize)]
    struct Row {
        environment: String,
        what: String,
        target: String,
        ok: bool,
        detail: String,
        /// What the operator must know even though the check passed (a lossy switch method).
        #[serde(skip_serializing_if = "Option::is_none")]
        caveat: Option<&'static str>,
    }
    let mut rows = Vec::new();
    for e in &world.engines {
        for s in &e.env.slots {
            let p = e.prober.probe_slot(s).await;
            let latency = p.latency.map_or("".into(), crate::timefmt::millis);
            let health = p.error.as_ref().map_or_else(
                || format!("{} {latency}", p.status.unwrap_or(0)),
                |e| e.to_string(),
            );
            let version = p.version.as_ref().map_or_else(
                || {
                    p.version_error
                        .as_ref()
                        .map_or("?".into(), |e| e.to_string())
                },
                |v| v.version.clone(),
            );
            for (what, target, ok, detail) in [
                ("health", &s.health_url, p.health.is_serving(), health),
                ("version", &s.version_url, p.version.is_some(), version),
            ] {
                rows.push(Row {
                    environment: e.env.name.clone(),
                    what: format!("slot {} {what}", s.name),
                    target: target.clone(),
                    ok,
                    detail,
                    caveat: None,
                });
            }
        }
        for (label, url) in [
            ("public URL", &e.env.public_url),
            ("preview URL", &e.env.preview_url),
        ] {
            if let Some(u) = url {
                let p = e.prober.probe_behind(&e.env, u).await;
                rows.push(Row {
                    environment: e.env.name.clone(),
                    what: label.into(),
                    target: p.url,
                    ok: p.error.is_none(),
                    detail: p.version.map_or_else(
                        || p.error.map_or("?".into(), |e| e.to_string()),
                        |v| v.version,
                    ),
                    caveat: None,
                });
            }
        }
        // Hook commands: each program must exist and be executable (they are not run).
        for (key, argv) in e.env.hooks.commands() {
            let program = argv.first().map_or("", String::as_str);
            let problem = crate::hooks::program_problem(program);
            rows.push(Row {
                environment: e.env.name.clone(),
                what: format!("hook {key}"),
                target: program.to_string(),
                ok: problem.is_none(),
                detail: problem.unwrap_or_else(|| "executable".into()),
                caveat: None,
            });
        }
        for r in &e.routers {
            let (ok, detail) =
                match crate::router::observe_within(r.as_ref(), r.observe_timeout()).await {
                    // Read, but configured so that it cannot switch: a failed check.
                    Ok(s) if !s.problems.is_empty() => (false, s.problems.join("; ")),
                    Ok(s) => (
                        true,
                        format!(
                            "live={} preview={}{}{}",
                            s.live.as_deref().unwrap_or("?"),
                            s.preview.as_deref().unwrap_or("-"),
                            s.weights
                                .as_ref()
                                .map_or(String::new(), |w| format!(" canary: {w}")),
                            // Whether `cutover canary` can run through this router.
                            if r.supports(crate::router::Verb::Weights) {
                                " weights"
                            } else {
                                " no-weights"
                            }
                        ),
                    ),
                    Err(err) => (false, err),
                };
            rows.push(Row {
                environment: e.env.name.clone(),
                what: format!("router {}", r.name()),
                target: r.kind().into(),
                ok,
                detail,
                caveat: r.caveat(),
            });
        }
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    if json {
        println!("{}", crate::redact::to_json_pretty(&rows)?);
    } else {
        outln!("config {} is valid", world.config.path.display());
        for r in &rows {
            outln!(
                "{} {:<14} {:<22} {:<40} {}",
                match (r.ok, r.caveat) {
                    (false, _) => "FAIL",
                    (true, Some(_)) => "WARN",
                    (true, None) => "ok  ",
                },
                r.environment,
                r.what,
                crate::text::fit(&r.target, 40),
                r.detail
            );
            if let Some(c) = r.caveat {
                outln!("     {c}");
            }
        }
        outln!("{} checks, {} failed", rows.len(), failed);
    }
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}
