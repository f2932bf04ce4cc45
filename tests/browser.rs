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
/// stdout and stderr (where `--enable-logging=stderr` puts the pages'
/// console messages, as `CONSOLE` lines); panics (with its stderr) if it
/// fails or runs too long.
fn run_chromium(profile: &Path, args: &[String]) -> (String, String) {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
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
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The console messages in Chromium's stderr.
fn console_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// The DOM Chromium built for `url`, after letting its scripts run for
/// `budget` of virtual time; fails if the page wrote to the console (an
/// uncaught error, a failed load).
fn dom_after(profile: &Path, url: &str, budget: Duration) -> String {
    let (out, err) = run_chromium(
        profile,
        &[
            format!("--virtual-time-budget={}", budget.as_millis()),
            "--dump-dom".to_string(),
            url.to_string(),
        ],
    );
    let console = console_lines(&err);
    assert!(console.is_empty(), "{url}: console messages {console:#?}");
    out
}

/// The DOM Chromium built for `url` (no console messages allowed).
fn dom(profile: &Path, url: &str) -> String {
    dom_after(profile, url, Duration::from_millis(500))
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
    // A tree too: parent-1 runs child-1 (Greet) as a sub-orchestration; and
    // journey-1 runs an activity, a timer, a sub-orchestration and a failing
    // activity.
    let client = duroxide::Client::new(store.clone());
    for (id, name) in [("parent-1", "Parent"), ("journey-1", "Journey")] {
        client.start_orchestration(id, name, "tree").await.unwrap();
        client
            .wait_for_orchestration(id, fixture::WAIT)
            .await
            .unwrap();
    }
    let ui = dashboard(&schema, &["--refresh", "1"]);
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
                "data-completed=\"5\" data-failed=\"1\"",
                "<svg class=\"chart\"",
                "id=\"minutes\"",
                "data-started=\"8\" data-completed=\"5\" data-failed=\"1\"",
                "id=\"latency-chart\"",
                "<td>Explode</td>",
                "<td>Boom</td>",
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
                "id=\"timeline\"",
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
            vec![
                "<tr class=\"failed\">",
                "ActivityFailed",
                "boom: disk on fire (Application",
                "data-kind=\"activity\" data-state=\"failed\"",
            ],
        ),
        (
            "instance-journey",
            "/instances/journey-1",
            vec![
                "<h1>instance journey-1</h1>",
                "data-kind=\"execution\" data-state=\"ok\"",
                "data-kind=\"timer\" data-state=\"ok\"",
                "data-kind=\"sub-orchestration\" data-state=\"ok\"",
                "data-kind=\"activity\" data-state=\"failed\"",
                "href=\"/instances/journey-child\"",
                "<li class=\"error\"><b>activity Boom</b>: boom: disk on fire (Application",
                "id=\"read-only\"",
            ],
        ),
        (
            "search",
            "/search?q=journey",
            vec![
                "<h1>search: journey</h1>",
                "href=\"/instances/journey-1\"",
                "href=\"/instances/journey-child\"",
            ],
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
    // A write posted by another site's page: refused (the browser shows
    // the 403 page), and nothing raised.
    let hostile = format!(
        "<form method=post action=\"{base}/instances/wait-1/raise\">\
         <input name=csrf value=guess><input name=name value=go><input name=data value=x>\
         </form><script>document.forms[0].submit()</script>"
    );
    let results = tokio::task::spawn_blocking({
        let profile = profile.clone();
        let base = base.clone();
        let pages: Vec<(String, String)> = pages
            .iter()
            .map(|(name, path, _)| (name.to_string(), path.to_string()))
            .collect();
        let work = work.clone();
        move || {
            // The console capture works: a probe page's message is seen.
            // A file, not a data: URL: Chromium 148 renders nothing for a
            // data: URL whose script calls a function.
            let probe = work.join("console-probe.html");
            std::fs::write(&probe, "<script>console.log('console-probe')</script>")
                .expect("write the probe page");
            let (_, err) = run_chromium(
                &profile,
                &[
                    "--dump-dom".to_string(),
                    format!("file://{}", probe.display()),
                ],
            );
            assert!(
                console_lines(&err)
                    .iter()
                    .any(|l| l.contains("console-probe")),
                "no console capture: {err}"
            );
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
                        "instance-failed" => Some("dashboard-instance-failed.png"),
                        "instance-journey" => Some("dashboard-instance.png"),
                        "search" => Some("dashboard-search.png"),
                        "stuck" => Some("dashboard-stuck.png"),
                        _ => None,
                    };
                    if let Some(keep) = keep {
                        std::fs::copy(&file, dir.join(keep)).unwrap();
                    }
                }
            }
            // Live: with --refresh 1, a few seconds of the page's own time
            // refresh its figures without a reload.
            let live = dom_after(&profile, &format!("{base}/"), Duration::from_secs(4));
            // A page of no site of ours (a file, as the probe above).
            let foreign = work.join("hostile.html");
            std::fs::write(&foreign, &hostile).expect("write the hostile page");
            let (refused, _) = run_chromium(
                &profile,
                &[
                    "--virtual-time-budget=3000".to_string(),
                    "--dump-dom".to_string(),
                    format!("file://{}", foreign.display()),
                ],
            );
            (out, live, refused)
        }
    })
    .await
    .unwrap();
    let (html, live, refused) = results;

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
    // The chart as the browser built it: 12 bars of each kind; per minute,
    // 60 of each.
    let overview = &html[0];
    assert_eq!(overview.matches("<rect class=\"ok\"").count(), 12);
    assert_eq!(overview.matches("<rect class=\"bad\"").count(), 12);
    assert_eq!(overview.matches("<rect class=\"started\"").count(), 60);
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
    // The journey's timeline: a bar for the execution, each activity, the
    // timer and the child, each with its duration.
    let journey = &html[6];
    assert_eq!(
        journey.matches("<rect class=\"bar ").count(),
        5,
        "{journey}"
    );
    assert_eq!(
        journey.matches("data-kind=\"activity\"").count(),
        2,
        "{journey}"
    );
    // The search by prefix found both journey instances and nothing else.
    let found = html[7].split("id=\"by-prefix\"").nth(1).unwrap();
    let found = found.split("<h2>").next().unwrap();
    assert!(
        !found.contains("greet-1") && !found.contains("wait-1"),
        "{found}"
    );
    // The live refresh ran and said so.
    let refreshes: u32 = live
        .split("data-refreshes=\"")
        .nth(1)
        .and_then(|r| r[..r.find('"')?].parse().ok())
        .expect("the refresh counter");
    assert!(refreshes >= 1, "no live refresh: {live}");
    assert!(live.contains("id=\"updated\""), "{live}");
    // The foreign page's write was refused, and wait-1 still waits.
    assert!(
        refused.contains("forbidden: this dashboard is read-only"),
        "{refused}"
    );
    let wait = store
        .inspect()
        .instance("wait-1", 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wait.status, "Running");
    assert!(!wait.history.iter().any(|h| h.kind == "ExternalEvent"));

    drop(ui);
    runtime.shutdown(None).await;
    let _ = std::fs::remove_dir_all(&work);
}

/// Headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands in on fd 3, replies out on fd 4,
/// each a JSON message ended by NUL), to act on a page as a user does.
struct Driven {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: std::sync::mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    session: Option<String>,
}

impl Driven {
    fn start(profile: &Path) -> Self {
        use std::io::Read;
        // fd 3 is the pipe we write, fd 4 the pipe we read; Chromium's own
        // stdout goes nowhere.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 1>/dev/null"#)
            .arg(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium with a debugging pipe");
        let to = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, from) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&message[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Driven {
            child,
            to,
            from,
            next_id: 0,
            session: None,
        }
    }

    /// Sends `method` with `params` (to the attached page, once there is
    /// one) and returns its result; panics on an error or after the limit.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let reply = self.send(method, params);
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Sends `method` and returns the whole reply (result or error).
    fn send(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = s.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.to.flush().unwrap();
        let deadline = Instant::now() + BROWSER_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no reply to {method}"));
            if reply["id"] == id {
                return reply;
            }
        }
    }

    /// Opens a page and attaches to it.
    fn open_page(&mut self) {
        let target = self.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let attached = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = attached["sessionId"].as_str().map(str::to_string);
        assert!(self.session.is_some(), "{attached}");
    }

    /// The value of the JavaScript `expression` in the page (null while a
    /// navigation replaces the page's context).
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.send(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["result"]["value"].clone()
    }

    /// Waits until the page has loaded and its path is `path`.
    fn wait_for(&mut self, path: &str) {
        let deadline = Instant::now() + BROWSER_LIMIT;
        loop {
            let state = self.eval("document.readyState + ' ' + location.pathname");
            if state == format!("complete {path}").as_str() {
                return;
            }
            assert!(Instant::now() < deadline, "never loaded {path}: {state}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Goes to `url` and waits until `path` has loaded.
    fn visit(&mut self, url: &str, path: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
        self.wait_for(path);
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_the_instance_page_works_with_the_token_and_the_flag() {
    chromium();
    let (store, _schemas, runtime) = filled_store("browser_write").await;
    let schema = store.schema().to_string();
    let ui = dashboard(&schema, &["--token", "t0k", "--allow-writes"]);
    let base = format!("http://{}", ui.addr);
    let base2 = base.clone();
    let work = std::env::temp_dir().join(format!(
        "duroxide-postgres-browser-write-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&work).unwrap();
    let profile = work.join("profile");
    let outcome = tokio::task::spawn_blocking(move || {
        let mut browser = Driven::start(&profile);
        browser.open_page();
        // Without the token: 401, and no form.
        browser.call(
            "Page.navigate",
            serde_json::json!({"url": format!("{base}/instances/wait-1")}),
        );
        browser.wait_for("/instances/wait-1");
        let body = browser.eval("document.body.innerText");
        assert!(
            body.as_str()
                .unwrap_or("")
                .contains("bearer token is required"),
            "{body}"
        );
        // Signed in once, the page offers the forms; fill in and submit the
        // raise form as a user would.
        browser.visit(&format!("{base}/login?token=t0k"), "/");
        browser.visit(&format!("{base}/instances/wait-1"), "/instances/wait-1");
        let submitted = browser.eval(
            "(function () { var f = document.querySelector('form[action$=\"/raise\"]');\
             if (!f) { return 'no form'; }\
             f.querySelector('[name=name]').value = 'go';\
             f.querySelector('[name=data]').value = 'clicked in a browser';\
             f.querySelector('button').click(); return 'submitted'; })()",
        );
        assert_eq!(submitted, "submitted");
        browser
    })
    .await
    .unwrap();
    // The event reached the instance, which completed with its data.
    let client = duroxide::Client::new(store.clone());
    let status = client
        .wait_for_orchestration("wait-1", fixture::WAIT)
        .await
        .unwrap();
    assert!(
        format!("{status:?}").contains("got clicked in a browser"),
        "{status:?}"
    );
    // And the page says so.
    let page = tokio::task::spawn_blocking(move || {
        let mut browser = outcome;
        browser.visit(&format!("{base2}/instances/wait-1"), "/instances/wait-1");
        browser.eval("document.querySelector('main').innerText")
    })
    .await
    .unwrap();
    let page = page.as_str().unwrap_or_default().to_string();
    assert!(
        page.contains("ExternalEvent") && page.contains("got clicked in a browser"),
        "{page}"
    );
    drop(ui);
    runtime.shutdown(None).await;
    let _ = std::fs::remove_dir_all(&work);
}
