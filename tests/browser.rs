//! The dashboard in a real browser: `duroxide-postgres ui` against a store
//! that a real runtime filled, each page opened in headless Chromium
//! (Debian's `chromium`), checking the DOM the browser built and that it
//! renders a screenshot.
//!
//! Chromium is required: without it the test fails and says how to install
//! it (`.ci/run` installs it). `CHROMIUM=/path` picks another binary. With
//! `DUROXIDE_UI_SCREENSHOTS=DIR` the screenshots of the overview, the list
//! and an instance page are also written to DIR (how `docs/images/` is
//! refreshed).

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod fixture;

use fixture::{dashboard, filled_store};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Width and height of the browser window (and so of the screenshots).
const WINDOW: (u32, u32) = (1200, 900);
/// A browser run that takes longer is stopped (and the test fails).
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

/// The browser: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("CHROMIUM") {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![
            "/usr/bin/chromium".into(),
            "/usr/bin/chromium-browser".into(),
        ],
    };
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => found.clone(),
        None => panic!(
            "headless Chromium is required by this test and was not found (looked at \
             {candidates:?}): install it with \
             `apt-get install -y --no-install-recommends chromium` (Debian; .ci/run does \
             this) or set CHROMIUM=/path/to/chromium"
        ),
    }
}

/// Runs headless Chromium with `args` on a private profile and returns its
/// stdout; panics (with its stderr) if it fails or runs too long.
fn run_chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > BROWSER_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} ran longer than {BROWSER_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The DOM Chromium built for `url`.
fn dom(profile: &Path, url: &str) -> String {
    run_chromium(profile, &["--dump-dom".to_string(), url.to_string()])
}

/// A screenshot of `url` into `file`; checks it is a PNG of the window size.
fn screenshot(profile: &Path, url: &str, file: &Path) {
    let _ = std::fs::remove_file(file);
    run_chromium(
        profile,
        &[format!("--screenshot={}", file.display()), url.to_string()],
    );
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("no screenshot of {url}: {e}"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{url}: not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), WINDOW, "{url}: screenshot size");
    assert!(png.len() > 10_000, "{url}: an empty-looking page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dashboard_page_renders_in_headless_chromium() {
    let browser = chromium(); // fails first, clearly, if there is none
    let (store, _schemas, runtime) = filled_store("browser").await;
    let schema = store.schema().to_string();
    // A tree too: parent-1 runs child-1 (Greet) as a sub-orchestration.
    let client = duroxide::Client::new(store.clone());
    client
        .start_orchestration("parent-1", "Parent", "tree")
        .await
        .unwrap();
    client
        .wait_for_orchestration("parent-1", fixture::WAIT)
        .await
        .unwrap();
    let ui = dashboard(&schema, &[]);
    let base = format!("http://{}", ui.addr);
    let work =
        std::env::temp_dir().join(format!("duroxide-postgres-browser-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let profile = work.join("profile");
    let shots = std::env::var_os("DUROXIDE_UI_SCREENSHOTS").map(PathBuf::from);

    let pages: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "overview",
            "/",
            vec![
                "<h1>store t_browser",
                "<a href=\"/instances?status=Failed\">Failed</a>",
                "data-completed=\"3\" data-failed=\"1\"",
                "<svg class=\"chart\"",
                "worker_queue",
            ],
        ),
        (
            "list",
            "/instances",
            vec![
                "<h1>instances</h1>",
                "<form class=\"filters\"",
                "href=\"/instances/greet-1\"",
                "href=\"/instances/wait-2\"",
                // child-1's parent column links its parent.
                "<td><a href=\"/instances/parent-1\">parent-1</a></td></tr>",
                "<tr class=\"failed\"><td><a href=\"/instances/explode-1\">",
            ],
        ),
        (
            "list-failed",
            "/instances?status=Failed",
            vec!["href=\"/instances/explode-1\"", "value=\"Failed\""],
        ),
        (
            "instance",
            "/instances/greet-1",
            vec![
                "<h1>instance greet-1</h1>",
                "ActivityCompleted",
                "hello hello world",
                "greeted once",
            ],
        ),
        (
            "instance-tree",
            "/instances/parent-1",
            vec![
                "SubOrchestrationScheduled",
                "<a href=\"/instances/child-1\">child-1</a>",
            ],
        ),
        (
            "instance-failed",
            "/instances/explode-1",
            vec!["<tr class=\"failed\">", "ActivityFailed", "disk on fire"],
        ),
        (
            "stuck",
            "/stuck?ready_for=0",
            vec!["<h1>stuck work</h1>", "href=\"/instances/wait-1\"", "gpu"],
        ),
    ];
    // Each page answers 200 before a browser opens it (a clear failure
    // rather than a browser waiting on an error page).
    for (name, path, _) in &pages {
        let (code, body) = fixture::http_get(ui.addr, path, None).await;
        assert_eq!(code, 200, "{name} ({path}): {body}");
    }
    let html = tokio::task::spawn_blocking({
        let profile = profile.clone();
        let base = base.clone();
        let pages: Vec<(String, String)> = pages
            .iter()
            .map(|(name, path, _)| (name.to_string(), path.to_string()))
            .collect();
        let work = work.clone();
        move || {
            let mut out = Vec::new();
            for (name, path) in pages {
                let url = format!("{base}{path}");
                out.push(dom(&profile, &url));
                let file = work.join(format!("{name}.png"));
                screenshot(&profile, &url, &file);
                if let Some(dir) = &shots {
                    let keep = match name.as_str() {
                        "overview" => Some("dashboard-overview.png"),
                        "list" => Some("dashboard-list.png"),
                        "instance-failed" => Some("dashboard-instance.png"),
                        _ => None,
                    };
                    if let Some(keep) = keep {
                        std::fs::copy(&file, dir.join(keep)).unwrap();
                    }
                }
            }
            out
        }
    })
    .await
    .unwrap();

    for ((name, _, wanted), dom) in pages.iter().zip(&html) {
        // The browser parsed a whole page: a body that ends where it should.
        assert!(
            dom.contains("<main>") && dom.trim_end().ends_with("</html>"),
            "{name} ({}): {dom}",
            browser.display()
        );
        for w in wanted {
            assert!(dom.contains(w), "{name}: {w:?} not rendered in\n{dom}");
        }
    }
    // The chart as the browser built it: 12 bars of each kind.
    let overview = &html[0];
    assert_eq!(overview.matches("<rect class=\"ok\"").count(), 12);
    assert_eq!(overview.matches("<rect class=\"bad\"").count(), 12);
    // The filtered list shows only the failed instance.
    assert!(
        !html[2].contains("href=\"/instances/greet-1\""),
        "{}",
        html[2]
    );
    assert!(
        !html[2].contains("href=\"/instances/parent-1\""),
        "{}",
        html[2]
    );

    drop(ui);
    runtime.shutdown(None).await;
    let _ = std::fs::remove_dir_all(&work);
}
