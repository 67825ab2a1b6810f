//! The explorer page in a real browser: Debian's `chromium`, headless, loads `/` from a
//! running miner and runs the page's script against the live API.
//!
//! Where no browser is installed the test says it is skipped, unless `MVBC_REQUIRE_BROWSER=1`
//! (set by `.ci/run`, which installs chromium), where that is a failure.

#[path = "support/http.rs"]
mod http;
#[path = "support/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{api_port, get_json};
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
        .args([
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
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
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
    let mut miner = Miner::start_with(m.path(), &net, &["--api-listen", "127.0.0.1:0"]);
    let port = api_port(&miner.wait_for("the API line", |l| l.starts_with("API: ")));
    miner.wait_log_height(2);
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

    // The search box's form sends `/?q=...`; the page looks it up and opens the block.
    let block = get_json(port, "/api/v1/block/1");
    let dom = rendered(&bin, profile.path(), &format!("{home}?q=1"));
    assert_eq!(
        attribute(&dom, "id=\"view\"", "data-view").as_deref(),
        Some("block"),
        "{dom}"
    );
    assert_eq!(
        attribute(&dom, "id=\"view\"", "data-hash").as_deref(),
        block["hash"].as_str(),
        "{dom}"
    );
    assert!(dom.contains("<h2>Block 1</h2>"), "{dom}");

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
