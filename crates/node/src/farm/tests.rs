use super::*;
use mvbc_protocol::rules::ConsensusParams;
use mvbc_protocol::{Amount, Chain, Pool};
use serde_json::json;

use crate::template::next_block;

const NETWORK: u32 = 12;
const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: NETWORK,
    block_size: 1,
    block_reward: Amount::from_units(10_000_000),
};
const UNIX: u64 = 1_795_478_500;

fn template(chain: &Chain) -> Arc<Template> {
    Arc::new(Template::next(chain, &Pool::default()).expect("a reward-only block needs no payment"))
}

fn addr(n: u8) -> Address {
    Address::of_public_key_der(&[n; 16])
}

fn from() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

/// A farm with work, and connection `conn` subscribed and authorized as `addr(n).rigN`.
struct Setup {
    farm: Farm,
    chain: Chain,
    t0: Instant,
}

impl Setup {
    fn new(token: Option<&str>) -> Setup {
        let chain = Chain::new(PARAMS);
        let t0 = Instant::now();
        let mut farm = Farm::new(token, NETWORK, 7);
        farm.set_work(Some(template(&chain)), t0, UNIX);
        Setup { farm, chain, t0 }
    }

    /// What the farm answered the subscription and the authorization.
    fn join(&mut self, conn: ConnId, n: u8, token: &str) -> Vec<FarmEffect> {
        assert!(self.farm.connected(conn, from(), self.t0));
        let agent = "test".into();
        let mut effects = self.ask(conn, Call::Subscribe { agent });
        effects.extend(self.ask(
            conn,
            Call::Authorize {
                address: addr(n),
                worker: format!("rig{n}"),
                token: token.into(),
            },
        ));
        effects
    }

    fn ask(&mut self, conn: ConnId, call: Call) -> Vec<FarmEffect> {
        self.ask_at(conn, call, self.t0)
    }

    fn ask_at(&mut self, conn: ConnId, call: Call, now: Instant) -> Vec<FarmEffect> {
        self.farm
            .request(conn, Request { id: json!(1), call }, now, UNIX);
        self.farm.take_effects()
    }
}

/// The extranonce in a subscribe reply, the job and difficulty of the last notify.
fn extranonce(effects: &[FarmEffect]) -> Option<u16> {
    effects.iter().find_map(|e| match e {
        FarmEffect::Send(_, ToWorker::Reply { result: Ok(v), .. }) => {
            Subscribed::from_value(v).map(|s| s.extranonce)
        }
        _ => None,
    })
}

fn last_job(effects: &[FarmEffect]) -> Option<(u64, BlockHeader, bool)> {
    effects.iter().rev().find_map(|e| match e {
        FarmEffect::Send(_, ToWorker::Notify { job, header, clean }) => {
            Some((*job, *header, *clean))
        }
        _ => None,
    })
}

fn replies(effects: &[FarmEffect]) -> Vec<Result<Value, (i64, String)>> {
    effects
        .iter()
        .filter_map(|e| match e {
            FarmEffect::Send(_, ToWorker::Reply { result, .. }) => Some(result.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(effects: &[FarmEffect]) -> Option<i64> {
    replies(effects)
        .last()
        .and_then(|r| r.clone().err().map(|e| e.0))
}

/// The first worker nonce from `start` whose hash under `extranonce` has between `min` and
/// `max` leading zero bits.
fn find(header: &BlockHeader, extranonce: u16, start: u64, min: u32, max: u32) -> u64 {
    mvbc_testkit::shares::find_share(header, extranonce, start, min..max + 1)
}

/// Subscribes and authorizes `conn` and returns its extranonce and first job.
fn joined(s: &mut Setup, conn: ConnId, n: u8) -> (u16, u64, BlockHeader) {
    let effects = s.join(conn, n, "");
    let (job, header, clean) = last_job(&effects).unwrap();
    assert!(clean);
    (extranonce(&effects).unwrap(), job, header)
}

#[test]
fn a_template_makes_the_same_block_as_assembling_it_whole() {
    let chain = Chain::new(ConsensusParams {
        block_size: 1,
        ..PARAMS
    });
    let t = template(&chain);
    let header = t.header(addr(1), UNIX);
    let assembled = Block::assemble(chain.tip_header(), vec![t.reward(addr(1))], UNIX, NETWORK);
    assert_eq!(t.block(addr(1), header), assembled);
    assert_eq!(
        next_block(&chain, &Pool::default(), addr(1), UNIX),
        Some(assembled)
    );
}

#[test]
fn each_worker_mines_a_block_paying_its_own_address_under_its_own_extranonce() {
    let mut s = Setup::new(None);
    let (extra1, job1, header1) = joined(&mut s, 1, 1);
    let (extra2, _, header2) = joined(&mut s, 2, 2);
    assert_ne!(extra1, extra2, "no two connections share an extranonce");
    assert_ne!(
        header1.merkle_root, header2.merkle_root,
        "each pays its own"
    );

    let nonce = find(&header1, extra1, 0, NETWORK, 256);
    let effects = s.ask(1, Call::Submit { job: job1, nonce });
    assert_eq!(replies(&effects), vec![Ok(json!(true))]);
    let block = effects
        .iter()
        .find_map(|e| match e {
            FarmEffect::Block { block, worker } => Some((block.clone(), worker.clone())),
            _ => None,
        })
        .expect("a share at the network's difficulty is a block");
    assert_eq!(block.1, format!("{}.rig1", addr(1)));
    let block = block.0;
    assert!(block.header.meets_own_difficulty());
    assert_eq!(block.compute_merkle_root(), block.header.merkle_root);
    assert_eq!(block.transactions[0], template(&s.chain).reward(addr(1)));
    s.chain
        .add_block(block, UNIX)
        .expect("the chain takes the worker's block");
    let workers = s.farm.workers(s.t0);
    let info = workers.iter().find(|w| w.key.address == addr(1)).unwrap();
    assert_eq!((info.accepted, info.blocks), (1, 1));
}

#[test]
fn a_share_for_another_connections_extranonce_is_too_easy_here() {
    let mut s = Setup::new(None);
    let (extra1, job1, header1) = joined(&mut s, 1, 1);
    let (extra2, job2, _) = joined(&mut s, 2, 1);
    // The same worker on two connections: the same header, apart only by extranonce.
    let ok = |extra, n| stratum::share_bits(&header1, extra, n) >= MIN_SHARE_DIFFICULTY;
    let nonce = (0..).find(|&n| ok(extra1, n) && !ok(extra2, n)).unwrap();
    let stolen = s.ask(2, Call::Submit { job: job2, nonce });
    assert_eq!(error_code(&stolen), Some(code::LOW_DIFFICULTY));
    let honest = s.ask(1, Call::Submit { job: job1, nonce });
    assert_eq!(replies(&honest), vec![Ok(json!(true))]);
}

#[test]
fn duplicate_easy_unknown_and_stale_shares_are_refused_and_counted() {
    let mut s = Setup::new(None);
    let (extra, job, header) = joined(&mut s, 1, 1);
    let good = find(&header, extra, 0, MIN_SHARE_DIFFICULTY, NETWORK - 1);
    assert_eq!(
        replies(&s.ask(1, Call::Submit { job, nonce: good })),
        vec![Ok(json!(true))]
    );
    let again = s.ask(1, Call::Submit { job, nonce: good });
    assert_eq!(error_code(&again), Some(code::DUPLICATE));
    let easy = find(&header, extra, 0, 0, MIN_SHARE_DIFFICULTY - 1);
    let low = s.ask(1, Call::Submit { job, nonce: easy });
    assert_eq!(error_code(&low), Some(code::LOW_DIFFICULTY));
    let unknown = s.ask(
        1,
        Call::Submit {
            job: job + 99,
            nonce: good,
        },
    );
    assert_eq!(error_code(&unknown), Some(code::JOB_NOT_FOUND));

    // A new tip: every worker gets a clean job, and shares of the old one are stale.
    s.farm.set_work(Some(template(&s.chain)), s.t0, UNIX + 1);
    let (new_job, _, clean) = last_job(&s.farm.take_effects()).unwrap();
    assert!(clean && new_job != job);
    let next = find(&header, extra, good + 1, MIN_SHARE_DIFFICULTY, NETWORK - 1);
    let stale = s.ask(1, Call::Submit { job, nonce: next });
    assert_eq!(error_code(&stale), Some(code::JOB_NOT_FOUND));
    let info = &s.farm.workers(s.t0)[0];
    assert_eq!((info.accepted, info.rejected, info.stale), (1, 3, 1));
}

#[test]
fn a_run_of_invalid_requests_ends_the_connection_and_an_honest_one_goes_on() {
    let mut s = Setup::new(None);
    let (extra, job, header) = joined(&mut s, 1, 1);
    let (_, _, _) = joined(&mut s, 2, 2);
    let easy = find(&header, extra, 0, 0, MIN_SHARE_DIFFICULTY - 1);
    for i in 0..MAX_INVALID_RUN {
        let effects = s.ask(
            2,
            Call::Submit {
                job: 1,
                nonce: easy,
            },
        );
        let closed = effects.contains(&FarmEffect::Close(2));
        assert_eq!(closed, i + 1 == MAX_INVALID_RUN, "after {} invalid", i + 1);
    }
    s.farm.closed(2, s.t0);
    let good = find(&header, extra, 0, MIN_SHARE_DIFFICULTY, NETWORK - 1);
    assert_eq!(
        replies(&s.ask(1, Call::Submit { job, nonce: good })),
        vec![Ok(json!(true))]
    );
}

#[test]
fn a_worker_without_the_right_token_is_refused_and_closed() {
    let mut s = Setup::new(Some("farm secret"));
    for wrong in ["", "farm secreT", "farm secret "] {
        let effects = s.join(9, 1, wrong);
        assert_eq!(error_code(&effects), Some(code::UNAUTHORIZED), "{wrong:?}");
        assert!(effects.contains(&FarmEffect::Close(9)));
        assert!(last_job(&effects).is_none());
        s.farm.closed(9, s.t0);
    }
    let effects = s.join(10, 1, "farm secret");
    assert!(last_job(&effects).is_some());
}

#[test]
fn submitting_before_authorizing_is_refused() {
    let mut s = Setup::new(None);
    assert!(s.farm.connected(1, from(), s.t0));
    let effects = s.ask(1, Call::Submit { job: 1, nonce: 0 });
    assert_eq!(error_code(&effects), Some(code::UNAUTHORIZED));
    let effects = s.ask(
        1,
        Call::Authorize {
            address: addr(1),
            worker: "w".into(),
            token: String::new(),
        },
    );
    assert_eq!(error_code(&effects), Some(code::NOT_SUBSCRIBED));
}

#[test]
fn a_connection_that_never_authorizes_is_closed() {
    let mut s = Setup::new(None);
    assert!(s.farm.connected(1, from(), s.t0));
    s.farm.tick(s.t0 + HELLO_TIME / 2, UNIX);
    assert!(s.farm.take_effects().is_empty());
    s.farm.tick(s.t0 + HELLO_TIME, UNIX);
    assert_eq!(s.farm.take_effects(), vec![FarmEffect::Close(1)]);
}

#[test]
fn the_share_difficulty_follows_the_share_rate() {
    let mut s = Setup::new(None);
    let network = 40;
    s.farm.network_difficulty = network;
    let (extra, _, _) = joined(&mut s, 1, 1);
    let start = network - START_BELOW_NETWORK;
    assert_eq!(s.farm.conns[&1].difficulty, start);
    // Too fast: 20 shares in 10 s is 120 a minute, 6x the target: up 2 bits (x4), no more.
    let job_at = |s: &Setup| {
        s.farm.conns[&1]
            .jobs
            .back()
            .map(|j| (j.id, j.header))
            .unwrap()
    };
    let (job, header) = job_at(&s);
    s.farm
        .conns
        .get_mut(&1)
        .unwrap()
        .jobs
        .back_mut()
        .unwrap()
        .difficulty = 0;
    let mut nonce = 0;
    let mut effects = Vec::new();
    for i in 0..RETARGET_SHARES {
        nonce = find(&header, extra, nonce + 1, 0, 256);
        let at = s.t0 + Duration::from_millis(500 * u64::from(i + 1));
        effects = s.ask_at(1, Call::Submit { job, nonce }, at);
    }
    assert!(effects.contains(&FarmEffect::Send(1, ToWorker::SetDifficulty(start + 2))));
    let (_, _, clean) = last_job(&effects).unwrap();
    assert!(!clean, "the earlier job stays good at its own difficulty");
    // A minute without a share: down one bit (/2).
    let later = s.t0 + Duration::from_secs(10) + RETARGET_AFTER;
    s.farm.tick(later, UNIX);
    let effects = s.farm.take_effects();
    assert!(effects.contains(&FarmEffect::Send(1, ToWorker::SetDifficulty(start + 1))));
    // Never under the minimum nor over the network's difficulty.
    assert_eq!(retarget_step(0, RETARGET_AFTER), -1);
    assert_eq!(retarget_step(20, RETARGET_AFTER), 0);
    assert_eq!(retarget_step(20, Duration::from_secs(1)), 2);
    assert_eq!(retarget_step(5, RETARGET_AFTER), -1);
}

#[test]
fn rates_come_from_the_work_of_accepted_shares() {
    let mut s = Setup::new(None);
    let (extra, job, header) = joined(&mut s, 1, 1);
    let d = s.farm.conns[&1].difficulty;
    let mut nonce = 0;
    for i in 0..10u64 {
        nonce = find(&header, extra, nonce + 1, d, NETWORK - 1);
        s.ask_at(
            1,
            Call::Submit { job, nonce },
            s.t0 + Duration::from_secs(3 * i + 1),
        );
    }
    let now = s.t0 + Duration::from_secs(30);
    let info = &s.farm.workers(now)[0];
    let expected = 10.0 * 2f64.powi(d as i32) / 30.0;
    for rate in info.rates {
        assert!(
            (rate - expected).abs() / expected < 0.01,
            "{rate} vs {expected}"
        );
    }
    assert!((info.expected_blocks - 10.0 * 2f64.powi(d as i32 - NETWORK as i32)).abs() < 1e-9);
    assert!(info.best_share >= d);
}

#[test]
fn without_work_workers_are_told_to_idle() {
    let mut s = Setup::new(None);
    joined(&mut s, 1, 1);
    s.farm.set_work(None, s.t0, UNIX);
    let effects = s.farm.take_effects();
    assert!(matches!(
        &effects[..],
        [FarmEffect::Send(1, ToWorker::Idle(_))]
    ));
    s.farm.set_work(Some(template(&s.chain)), s.t0, UNIX);
    assert!(last_job(&s.farm.take_effects()).is_some_and(|(_, _, clean)| clean));
}

#[test]
fn a_malformed_line_is_answered_and_counted() {
    let mut s = Setup::new(None);
    joined(&mut s, 1, 1);
    let refused = Request::parse(b"{\"id\":4,\"method\":\"mining.dance\"}").unwrap_err();
    s.farm.refused(1, refused, s.t0);
    let effects = s.farm.take_effects();
    assert_eq!(error_code(&effects), Some(code::OTHER));
    assert_eq!(s.farm.workers(s.t0)[0].rejected, 1);
}

#[test]
fn a_full_farm_lets_a_newcomer_take_the_place_of_one_that_never_authorized() {
    let mut s = Setup::new(Some("token"));
    // The first connection authorizes; the rest (say, without the token) only connect.
    s.join(0, 1, "token");
    for conn in 1..MAX_WORKERS as ConnId {
        let at = s.t0 + Duration::from_millis(conn);
        assert!(s.farm.connected(conn, from(), at));
    }
    s.farm.take_effects();
    // Full: the one that has waited longest without authorizing (1) makes room.
    let late = s.t0 + Duration::from_secs(5);
    assert!(s.farm.connected(9_999, from(), late));
    assert_eq!(s.farm.take_effects(), vec![FarmEffect::Close(1)]);
    assert_eq!(s.farm.connections(), MAX_WORKERS);
    s.farm.closed(1, late);
    assert_eq!(
        s.farm.connections(),
        MAX_WORKERS,
        "closing the evicted one changes nothing"
    );
    // The authorized one is never evicted; with every connection authorized, newcomers wait.
    let mut s = Setup::new(None);
    for conn in 0..MAX_WORKERS as ConnId {
        s.join(conn, (conn % 200) as u8, "");
    }
    s.farm.take_effects();
    assert!(!s.farm.connected(10_000, from(), s.t0));
    assert!(s.farm.take_effects().is_empty());
}
