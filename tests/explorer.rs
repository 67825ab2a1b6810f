//! The explorer page in a real browser: Debian's `chromium`, headless, loads `/` from a
//! running miner and runs the page's script against the live API.
//!
//! Where no browser is installed the test says it is skipped, unless `MVBC_REQUIRE_BROWSER=1`
//! (set by `.ci/run`, which installs chromium), where that is a failure.

use mvbc_testkit::http;
use mvbc_testkit::procs;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use http::get_json;
use procs::*;
use tempfile::tempdir;

/// The browser to drive: `MVBC_CHROMIUM`, or the first of Debian's and others' names on PATH.
fn browser(test: &str) -> Option<PathBuf> {
    let required = std::env::var("MVBC_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let named = std::env::var_os("MVBC_CHROMIUM").map(PathBuf::from);
    let found = named.or_else(|| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
    });
    match found {
        Some(path) => Some(path),
        None if required => panic!("{test}: no chromium on PATH and MVBC_REQUIRE_BROWSER=1"),
        None => {
            eprintln!(
                "{test}: SKIPPED, no chromium on PATH (apt-get install chromium; set \
                 MVBC_REQUIRE_BROWSER=1 to make this a failure)"
            );
            None
        }
    }
}

/// Runs headless chromium on `url` with `args` (its own empty profile, no traffic beyond this
/// host); returns stdout. Fails the test after a minute.
fn chromium(bin: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args(flags(profile))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium ran over a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The DOM after the page's scripts ran, with time for its fetches.
fn rendered(bin: &Path, profile: &Path, url: &str) -> String {
    chromium(
        bin,
        profile,
        url,
        &["--virtual-time-budget=10000", "--dump-dom"],
    )
}

/// The flags every run of the browser takes: headless, its own profile, no traffic beyond
/// this host.
fn flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The browser driven as a user would: the DevTools protocol over `--remote-debugging-pipe`
/// (JSON messages ended by a NUL byte, read by the browser on fd 3 and written on fd 4), so
/// clicks and keys go through the browser's own input path.
struct Browser {
    child: Child,
    to: File,
    from: Receiver<Value>,
    next: u64,
    session: Option<String>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: pipe(2) just opened both; nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start(bin: &Path, profile: &Path) -> Browser {
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let (r, w) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        let mut command = Command::new(bin);
        command
            .args(flags(profile))
            .args(["--remote-debugging-pipe", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. The two ends go to high
        // numbers first, so placing them at 3 and 4 cannot overwrite one with the other.
        unsafe {
            command.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD, 100);
                let w2 = libc::fcntl(w, libc::F_DUPFD, 100);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop((browser_reads, browser_writes));
        let (tx, from) = channel();
        std::thread::spawn(move || {
            for message in BufReader::new(File::from(we_read)).split(0) {
                let Ok(message) = message else { return };
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        Browser {
            child,
            to: File::from(we_write),
            from,
            next: 1,
            session: None,
        }
    }

    /// One protocol command and its result (events in between are passed over).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page and talks to that page from now on.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({ "url": url }))["targetId"].clone();
        let session = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )["sessionId"]
            .clone();
        self.session = Some(session.as_str().unwrap().to_string());
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )["result"]["value"]
            .clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A left click in the middle of the element `selector` names, as a mouse would, after
    /// scrolling it into view as a user would.
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector('{selector}'); \
             e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `attr` on the first element whose tag holds `marker` (`id="tip"`) in a
/// dumped DOM.
fn attribute(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let value = tag.split(&format!(" {attr}=\"")).nth(1)?;
    Some(value.split('"').next()?.to_string())
}

#[test]
fn the_explorer_shows_the_tip_and_a_drawn_chart_and_a_search_opens_the_block() {
    let test = "explorer";
    let Some(bin) = browser(test) else { return };
    // Reward-only blocks, mined without a pause: a live chart, a tip that moves.
    let mut net = Net::with_difficulty(24);
    net.block_size = 1;
    let m = tempdir().unwrap();
    let mut miner = Miner::start(m.path(), &net);
    let port = miner.api();
    miner.wait_height(2);
    poll_until(
        &mut (),
        |_| {
            let h = get_json(port, "/api/v1/hashrate?window=900");
            (h["ages"].as_array().is_some_and(|a| a.len() >= 5)).then_some(())
        },
        |_| "the hash-rate history never had five points".into(),
    );

    let profile = tempdir().unwrap();
    let home = format!("http://127.0.0.1:{port}/");
    let before = get_json(port, "/api/v1/summary")["height"]
        .as_u64()
        .unwrap();
    let dom = rendered(&bin, profile.path(), &home);
    // The tip shown is the tip the node had while the page loaded: on its best chain, no
    // older than the tip before the browser started.
    let tip = attribute(&dom, "id=\"tip\"", "data-tip")
        .unwrap_or_else(|| panic!("the page shows no tip\n{dom}"));
    let shown = get_json(port, &format!("/api/v1/block/{tip}"));
    assert_eq!(shown["best_chain"], true, "{shown}");
    assert!(shown["height"].as_u64().unwrap() >= before, "{shown}");
    assert!(dom.contains(&format!(">{tip}<")), "the tip as text\n{dom}");
    let points: usize = attribute(&dom, "class=\"rate-chart\"", "data-points")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drawn chart\n{dom}"));
    assert!(points >= 2, "the chart drew {points} points\n{dom}");
    assert!(
        dom.contains("Latest blocks"),
        "the home view listed blocks\n{dom}"
    );

    // A user clicks the search box, types a height and clicks Search: the block opens.
    let block = get_json(port, "/api/v1/block/1");
    let hash = block["hash"].as_str().unwrap();
    let driven = tempdir().unwrap();
    let mut browser = Browser::start(&bin, driven.path());
    browser.open(&home);
    browser.wait("the tip", "!!document.getElementById('tip').dataset.tip");
    browser.click("#q");
    browser.call("Input.insertText", json!({ "text": "1" }));
    browser.click("#search button");
    browser.wait(
        "block 1",
        &format!(
            "document.getElementById('view').dataset.hash === '{hash}' && \
             document.getElementById('block-height').textContent === '1'"
        ),
    );
    assert_eq!(browser.eval("location.hash"), json!("#/block/1"));
    drop(browser);
    // Without script, the same form sends `/?q=1`: the page does the same search.
    let dom = rendered(&bin, profile.path(), &format!("{home}?q=1"));
    assert_eq!(
        attribute(&dom, "id=\"view\"", "data-hash").as_deref(),
        Some(hash),
        "{dom}"
    );

    // The README's picture, taken by the same browser.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &bin,
        profile.path(),
        &home,
        &[
            "--virtual-time-budget=10000",
            "--window-size=1280,1100",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real picture"
    );
    eprintln!("{test}: screenshot in {}", shot.display());
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Issue 22: a view replaces the dashboard, so a block clicked at a phone's width (390 px) or
/// a desktop's (1280 px) opens on the first screen; the address bar follows and Back returns;
/// older blocks are a page away; a search's error stays through the page's refreshes.
#[test]
fn a_clicked_block_opens_on_the_first_screen_at_390_and_1280_px_and_back_returns() {
    let test = "explorer navigation";
    let Some(bin) = browser(test) else { return };
    let net = Net::new();
    let m = tempdir().unwrap();
    let key = mvbc_protocol::KeyPair::generate(1024).unwrap();
    store_blocks(&net, m.path(), &build_chain(&net, &key, 40, 0));
    let mut miner = Miner::start(m.path(), &net);
    let port = miner.api();
    miner.wait_height(40);
    let home = format!("http://127.0.0.1:{port}/");
    let hash = |h: u64| get_json(port, &format!("/api/v1/block/{h}"))["hash"].clone();
    let profile = tempdir().unwrap();
    let mut browser = Browser::start(&bin, profile.path());
    for (width, height) in [(390, 844), (1280, 800)] {
        browser.open(&home);
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500 }),
        );
        browser.wait(
            "the latest blocks",
            "!!document.querySelector('#view a[href=\"#/block/38\"]')",
        );
        browser.click("#view a[href=\"#/block/38\"]");
        browser.wait(
            "block 38",
            &format!(
                "document.getElementById('view').dataset.hash === {}",
                hash(38)
            ),
        );
        assert_eq!(
            browser.eval("location.hash"),
            json!("#/block/38"),
            "{width} px"
        );
        let first_screen = browser.eval(
            "(() => { const r = document.getElementById('block-height').getBoundingClientRect(); \
             return scrollY === 0 && r.top >= 0 && r.bottom <= innerHeight; })()",
        );
        // In the document's first screen, not merely where the click had scrolled to.
        assert_eq!(
            first_screen,
            json!(true),
            "block 38 is on the first screen at {width} px"
        );
        assert_eq!(
            browser.eval("document.getElementById('dashboard').hidden"),
            json!(true)
        );
        // Back: the dashboard and the latest blocks again.
        browser.eval("history.back()");
        browser.wait(
            "the dashboard after Back",
            "document.getElementById('view').dataset.view === 'home' && \
             !document.getElementById('dashboard').hidden",
        );
        // Older blocks, a page away.
        browser.wait(
            "the older blocks link",
            "!!document.getElementById('older-blocks')",
        );
        browser.click("#older-blocks");
        browser.wait(
            "an older page",
            "document.getElementById('view').dataset.view === 'blocks' && \
             !!document.querySelector('#view a[href=\"#/block/10\"]')",
        );
        let age = browser.eval("document.querySelector('#view .age').textContent");
        assert!(age.as_str().is_some_and(|a| a.ends_with(" ago")), "{age}");
        // A search that finds nothing says so, and the message outlives the next refresh.
        browser.click("#q");
        browser.call("Input.insertText", json!({ "text": "no such thing" }));
        browser.click("#search button");
        browser.wait(
            "the search's error",
            "!document.getElementById('error').hidden",
        );
        std::thread::sleep(Duration::from_millis(3_500));
        assert_eq!(
            browser.eval("document.getElementById('error').hidden"),
            json!(false),
            "the error stayed through a refresh at {width} px"
        );
    }
    drop(browser);
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn the_explorer_lists_the_pool_workers_with_their_rates_and_a_chart() {
    let test = "explorer workers";
    let Some(bin) = browser(test) else { return };
    let mut net = Net::with_difficulty(22);
    net.block_size = 1;
    let (m, w1, w2) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let mut node = Miner::start_with(
        m.path(),
        &net,
        &["--device", "none", "--pool-listen", "127.0.0.1:0"],
    );
    let pool = node.pool.unwrap().to_string();
    let address = node
        .wait_for("the reward address", |l| {
            l.starts_with("Mining rewards go to")
        })
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let cpu = ["--device", "cpu", "--threads", "1"];
    let mut workers: Vec<Proc> = [("rig-a", &w1), ("rig-b", &w2)]
        .into_iter()
        .map(|(name, dir)| {
            let mut args = vec!["--pool", &pool, "--address", &address, "--worker", name];
            args.extend_from_slice(&cpu);
            Proc::spawn(&miner_bin(), dir.path(), &net, &args)
        })
        .collect();
    node.wait_api("two workers with shares", "workers", |v| {
        v["workers"]
            .as_array()
            .is_some_and(|ws| ws.len() == 2 && ws.iter().all(|w| w["accepted"].as_u64() > Some(0)))
    });
    let profile = tempdir().unwrap();
    let home = format!("http://127.0.0.1:{}/", node.api());
    let dom = rendered(&bin, profile.path(), &home);
    for name in ["rig-a", "rig-b"] {
        assert!(
            dom.contains(&format!("<td>{name}</td>")),
            "{name} listed\n{dom}"
        );
    }
    let bars: usize = attribute(&dom, "id=\"workers-chart\"", "data-bars")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drawn workers' chart\n{dom}"));
    assert_eq!(bars, 2, "{dom}");
    workers.clear();
}
