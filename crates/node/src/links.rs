//! Links: TCP connections to peers wherever a connection reaches, beside broadcast on a LAN.
//!
//! [`Links`] decides, with no I/O, whom to dial and when, which inbound links to take, how
//! much each link may send, which addresses to remember, share and save. The node core calls
//! it; the driver owns the sockets.
//!
//! - **Named peers** (`peers`, `--peer`) are kept linked: a lost or failed one is dialled again
//!   after 1 s, doubling to at most a minute.
//! - **Other addresses** (saved in `peers.dat`, or learned from peers) fill up to
//!   [`MAX_OUTBOUND_OTHER`] more outbound links, one dial per [`OTHER_DIAL_INTERVAL`] at most:
//!   a flood of gossiped addresses cannot make the node dial wherever it is told.
//! - **Inbound links**: at most [`MAX_INBOUND`], [`MAX_INBOUND_PER_IP`] from one address; a
//!   link quiet for the caller's `quiet` time is closed, which makes room. When all are taken, a
//!   newcomer takes the place of the inbound link that has brought nothing new (a block its
//!   server served, a payment pooled) for the longest, if that is over [`EVICT_AFTER`]: slots
//!   held by peers that only keep the link alive go first, as in the block server.
//! - **Per link**: token buckets for payments, statuses and address lists; what is over is
//!   dropped and counted. A link that sends what does not decode, or a payment whose signature
//!   is bad, is closed and its address refused for [`BAN`].
//! - **Addresses**: at most [`MAX_KNOWN`] remembered; when full, a new one takes the place of
//!   the oldest learned address that never served, so memory stays bounded whatever is sent.
//!   Those that served well (a link that stayed up, a download that brought blocks) are saved,
//!   at most [`MAX_SAVED`]: those this node dialled or downloaded from first (an inbound
//!   link's port is only its word), at most [`MAX_SAVED_PER_IP`] per IP and
//!   [`MAX_SAVED_PER_GROUP`] per /16 (IPv4) or /32 (IPv6), as Bitcoin's addrman buckets by
//!   group; so one host cycling ports cannot fill the list or push proven peers out. A saved
//!   address that fails [`FORGET_GOOD_AFTER`] dials in a row is no longer saved.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mvbc_protocol::rate::TokenBucket;

/// A link's number, given by [`Links::up`].
pub type LinkId = u64;

/// Inbound links held at once.
pub const MAX_INBOUND: usize = 16;
/// Inbound links from one IP address.
pub const MAX_INBOUND_PER_IP: usize = 2;
/// Outbound links to addresses not named by the user.
pub const MAX_OUTBOUND_OTHER: usize = 4;
/// At most one dial of an address not named by the user per this long.
pub const OTHER_DIAL_INTERVAL: Duration = Duration::from_secs(2);
/// Addresses remembered.
pub const MAX_KNOWN: usize = 1_000;
/// Addresses saved for the next start.
pub const MAX_SAVED: usize = 100;
/// Saved addresses on one IP address.
pub const MAX_SAVED_PER_IP: usize = 4;
/// Saved addresses in one network group: a /16 of IPv4, a /32 of IPv6.
pub const MAX_SAVED_PER_GROUP: usize = 16;
/// A saved address that failed this many dials in a row is saved no more.
pub const FORGET_GOOD_AFTER: u32 = 8;
/// Addresses sent in one share.
pub const SHARE: usize = 32;
/// How long the address of a link that sent invalid data is refused.
pub const BAN: Duration = Duration::from_secs(10 * 60);
/// How often each link is sent the addresses this node knows.
pub const SHARE_INTERVAL: Duration = Duration::from_secs(60);
/// An inbound link that brought nothing new for this long may make room for a newcomer.
pub const EVICT_AFTER: Duration = Duration::from_secs(60);
/// A link that stayed up this long has served well.
const GOOD_AFTER: Duration = Duration::from_secs(30);
const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// An address learned by gossip that never served and failed this many dials in a row is
/// forgotten.
const MAX_FAILURES: u32 = 3;

/// What one link may send, as (per second, burst).
pub const PAYMENT_RATE: (f64, f64) = (50.0, 200.0);
/// Statuses: one an interval is plenty; a tip change may add some.
pub const STATUS_RATE: (f64, f64) = (4.0, 10.0);
/// Address lists: one a share interval is what an honest peer sends.
pub const ADDRS_RATE: (f64, f64) = (0.1, 3.0);

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The user named it: always kept linked.
    Named,
    /// Saved by an earlier run.
    Saved,
    /// A peer told us of it.
    Gossip,
}

/// Why a link closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Down {
    /// The connection ended or failed.
    Lost,
    /// It was quiet too long.
    Quiet,
    /// It sent what does not decode or cannot be valid.
    Invalid(Invalid),
    /// A newcomer took its place: it had brought nothing new for [`EVICT_AFTER`].
    Replaced,
}

/// What a peer sent that closes its link and refuses its address for [`BAN`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A frame declaring more bytes than a link message may have.
    #[error("a frame of {len} bytes, over the cap of {cap}")]
    TooLong {
        /// Declared length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// A message that does not decode.
    #[error("{0}")]
    Message(#[from] mvbc_protocol::wire::WireError),
    /// A payment that cannot be valid, whatever the chain (a bad signature, say).
    #[error("invalid payment: {0}")]
    Payment(#[from] mvbc_protocol::tx::TxError),
}

/// Why an inbound link was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The address sent invalid data lately.
    #[error("its address is refused for a while after invalid data")]
    Banned,
    /// Too many links already.
    #[error("already {0} inbound links")]
    Full(usize),
    /// Too many from this address.
    #[error("already {MAX_INBOUND_PER_IP} links from its address")]
    AddressFull,
    /// It is this node.
    #[error("it is this node")]
    Itself,
    /// Already linked to that node.
    #[error("already linked to that node")]
    Duplicate,
    /// Its hello names no block server port: nothing to download from or to share.
    #[error("it announces no block server port")]
    NoPort,
    /// It belongs to another network (other consensus parameters).
    #[error("it belongs to another network ({0})")]
    OtherNetwork(mvbc_protocol::NetworkId),
}

/// One link.
#[derive(Clone, Debug)]
pub struct Link {
    /// The peer's block server: the address dialled, or the inbound peer's IP with the port
    /// its hello announced.
    pub addr: SocketAddr,
    /// Whether this node dialled it.
    pub outbound: bool,
    /// The peer's node id.
    pub node_id: u64,
    /// When it came up.
    pub since: Instant,
    /// When it last sent anything.
    pub last_heard: Instant,
    /// When it last brought something new: a block its server served, a payment pooled.
    pub last_useful: Instant,
    /// When it was last sent the addresses this node knows.
    pub shared_at: Option<Instant>,
    /// Messages over its rates, dropped.
    pub over: u64,
    payments: TokenBucket,
    statuses: TokenBucket,
    addrs: TokenBucket,
}

#[derive(Clone, Debug)]
struct Known {
    origin: Origin,
    learned: Instant,
    next_dial: Instant,
    failures: u32,
    good: bool,
    /// A dial of it made a link once: it is a node, not hearsay.
    answered: bool,
    /// A download from it brought blocks.
    served: bool,
}

/// What kind of message a link sent, for its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A payment.
    Payment,
    /// A status.
    Status,
    /// A list of addresses.
    Addrs,
}

/// The links and the addresses they lead to.
#[derive(Debug)]
pub struct Links {
    node_id: u64,
    links: HashMap<LinkId, Link>,
    known: HashMap<SocketAddr, Known>,
    banned: HashMap<IpAddr, Instant>,
    dialing: HashSet<SocketAddr>,
    /// No dial of an address not named before then (`None`: any time).
    next_other_dial: Option<Instant>,
    next_id: LinkId,
    /// The good addresses changed since the last save.
    dirty: bool,
}

impl Links {
    /// Links for node `node_id` to the `named` peers (always) and, as room allows, to `saved`
    /// ones.
    pub fn new(node_id: u64, named: &[SocketAddr], saved: &[SocketAddr], now: Instant) -> Links {
        let mut links = Links::none(node_id);
        for addr in saved.iter().take(MAX_SAVED) {
            links
                .known
                .insert(*addr, Known::new(Origin::Saved, true, now));
        }
        for addr in named.iter() {
            links
                .known
                .insert(*addr, Known::new(Origin::Named, false, now));
        }
        links
    }

    /// No links and no addresses: a node heard only by broadcast, until a peer links to it.
    pub fn none(node_id: u64) -> Links {
        Links {
            node_id,
            links: HashMap::new(),
            known: HashMap::new(),
            banned: HashMap::new(),
            dialing: HashSet::new(),
            next_other_dial: None,
            next_id: 1,
            dirty: false,
        }
    }

    /// Keeps `addr` linked from now on, as a named peer (one whose name resolved late).
    pub fn add_named(&mut self, addr: SocketAddr, now: Instant) {
        let known = self
            .known
            .entry(addr)
            .or_insert_with(|| Known::new(Origin::Named, false, now));
        known.origin = Origin::Named;
    }

    /// The links up now.
    pub fn iter(&self) -> impl Iterator<Item = (&LinkId, &Link)> {
        self.links.iter()
    }

    /// One link.
    pub fn get(&self, id: LinkId) -> Option<&Link> {
        self.links.get(&id)
    }

    /// Links up now.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether no link is up.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Addresses remembered.
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Addresses to dial now: every named peer not linked nor being dialled whose time has
    /// come, and at most one other when there is room for it.
    pub fn due(&mut self, now: Instant) -> Vec<SocketAddr> {
        self.banned.retain(|_, until| *until > now);
        let linked: HashSet<SocketAddr> = self.links.values().map(|l| l.addr).collect();
        let mut dial: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| {
                k.origin == Origin::Named
                    && k.next_dial <= now
                    && !linked.contains(a)
                    && !self.dialing.contains(a)
            })
            .map(|(a, _)| *a)
            .collect();
        let other_links = self
            .links
            .values()
            .filter(|l| l.outbound && !self.is_named(&l.addr))
            .count()
            + self.dialing.iter().filter(|a| !self.is_named(a)).count();
        if other_links < MAX_OUTBOUND_OTHER && self.next_other_dial.is_none_or(|t| now >= t) {
            let pick = self
                .known
                .iter()
                .filter(|(a, k)| {
                    k.origin != Origin::Named
                        && k.next_dial <= now
                        && !linked.contains(a)
                        && !self.dialing.contains(a)
                        && !self.banned.contains_key(&a.ip())
                })
                // Those that served before first, then the fewest failures, then the oldest.
                .min_by_key(|(a, k)| (!k.good, k.failures, k.learned, **a))
                .map(|(a, _)| *a);
            if let Some(addr) = pick {
                dial.push(addr);
                self.next_other_dial = Some(now + OTHER_DIAL_INTERVAL);
            }
        }
        dial.sort();
        for addr in &dial {
            self.dialing.insert(*addr);
        }
        dial
    }

    /// A dial of `addr` failed.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        self.dialing.remove(&addr);
        let Some(k) = self.known.get_mut(&addr) else {
            return;
        };
        k.failures = k.failures.saturating_add(1);
        k.next_dial = now + backoff(k.failures);
        // A saved address that stopped answering ages out of the saved list.
        if k.good && k.origin != Origin::Named && k.failures >= FORGET_GOOD_AFTER {
            k.good = false;
            self.dirty = true;
        }
        // A hearsay address that never answered is forgotten; one that linked or served is
        // tried again, less and less often, as a named one is: it may be across a partition.
        if k.origin != Origin::Named && !k.good && !k.answered && k.failures >= MAX_FAILURES {
            self.known.remove(&addr);
        }
    }

    /// Whether an inbound link from `from`, announcing node `hello_node`, may come up, and
    /// which inbound link must make room for it, if any.
    pub fn admit(
        &self,
        from: IpAddr,
        (hello_node, hello_port): (u64, u16),
        now: Instant,
    ) -> Result<Option<LinkId>, Refused> {
        if self.banned.get(&from).is_some_and(|until| *until > now) {
            return Err(Refused::Banned);
        }
        if hello_node == self.node_id {
            return Err(Refused::Itself);
        }
        if hello_port == 0 {
            return Err(Refused::NoPort);
        }
        let inbound = self.links.values().filter(|l| !l.outbound);
        let (mut all, mut same) = (0, 0);
        for l in inbound {
            all += 1;
            same += usize::from(l.addr.ip() == from);
        }
        if same >= MAX_INBOUND_PER_IP {
            return Err(Refused::AddressFull);
        }
        if all >= MAX_INBOUND {
            return self
                .links
                .iter()
                .filter(|(_, l)| {
                    !l.outbound && now.saturating_duration_since(l.last_useful) >= EVICT_AFTER
                })
                .min_by_key(|(id, l)| (l.last_useful, l.since, **id))
                .map(|(id, _)| Some(*id))
                .ok_or(Refused::Full(all));
        }
        Ok(None)
    }

    /// Link `id` brought something new.
    pub fn useful(&mut self, id: LinkId, now: Instant) {
        if let Some(l) = self.links.get_mut(&id) {
            l.last_useful = now;
        }
    }

    /// A link came up (after [`Links::admit`] for an inbound one). Between two nodes, the link
    /// dialled by the lower node id is the one kept, so both ends keep the same one: returns
    /// the new link's id and, if this one replaces an older link to the same node, that one's
    /// id, to close; or why it is refused. Node ids are public, so only a link at the same
    /// address counts as the same node: one claiming a linked id from another address is
    /// another peer, kept beside it (within the inbound caps), and never displaces it or keeps
    /// it out (a squatter cannot cut a node off from an honest peer).
    pub fn up(
        &mut self,
        addr: SocketAddr,
        outbound: bool,
        node_id: u64,
        now: Instant,
    ) -> Result<(LinkId, Option<LinkId>), Refused> {
        if outbound {
            self.dialing.remove(&addr);
            if let Some(k) = self.known.get_mut(&addr) {
                k.failures = 0;
                k.next_dial = now + REDIAL_MIN;
                k.answered = true;
            }
        }
        if node_id == self.node_id {
            // A named peer that is this node: never dial it again.
            self.known.remove(&addr);
            return Err(Refused::Itself);
        }
        let dialer = |outbound: bool| if outbound { self.node_id } else { node_id };
        let mut replaced = None;
        let same = |l: &Link| l.node_id == node_id && l.addr == addr;
        if let Some((old, link)) = self.links.iter().find(|(_, l)| same(l)) {
            if dialer(link.outbound) <= dialer(outbound) {
                return Err(Refused::Duplicate);
            }
            replaced = Some(*old);
        }
        if let Some(old) = replaced {
            self.links.remove(&old);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.links.insert(
            id,
            Link {
                addr,
                outbound,
                node_id,
                since: now,
                last_heard: now,
                last_useful: now,
                shared_at: None,
                over: 0,
                payments: TokenBucket::full(PAYMENT_RATE.0, PAYMENT_RATE.1),
                statuses: TokenBucket::full(STATUS_RATE.0, STATUS_RATE.1),
                addrs: TokenBucket::full(ADDRS_RATE.0, ADDRS_RATE.1),
            },
        );
        if !self.known.contains_key(&addr) && !self.banned.contains_key(&addr.ip()) {
            self.remember(addr, Origin::Gossip, now);
        }
        Ok((id, replaced))
    }

    /// Link `id` sent a message of `kind` at `now`: whether its rate allows it (if not, it is
    /// dropped and counted).
    pub fn allow(&mut self, id: LinkId, kind: Kind, now: Instant) -> bool {
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        link.last_heard = now;
        let ok = match kind {
            Kind::Payment => link.payments.take(now),
            Kind::Status => link.statuses.take(now),
            Kind::Addrs => link.addrs.take(now),
        };
        if !ok {
            link.over += 1;
        }
        ok
    }

    /// Link `id` is down. A named peer is dialled again after a back-off; one that sent invalid
    /// data has its address refused for [`BAN`].
    pub fn down(&mut self, id: LinkId, why: &Down, now: Instant) -> Option<Link> {
        let link = self.links.remove(&id)?;
        if let Down::Invalid(_) = why {
            self.banned.insert(link.addr.ip(), now + BAN);
            if let Some(k) = self.known.get_mut(&link.addr) {
                k.good = false;
                if k.origin != Origin::Named {
                    self.known.remove(&link.addr);
                }
                self.dirty = true;
            }
            return Some(link);
        }
        if now.saturating_duration_since(link.since) >= GOOD_AFTER {
            self.mark_good(link.addr);
        }
        if let Some(k) = self.known.get_mut(&link.addr)
            && link.outbound
        {
            k.failures = k.failures.saturating_add(1);
            k.next_dial = now + backoff(k.failures);
        }
        Some(link)
    }

    /// Links quiet since before `now - quiet`, to close.
    pub fn quiet(&self, now: Instant, quiet: Duration) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_heard) > quiet)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Links that stayed up long enough count as good (and are saved).
    pub fn review(&mut self, now: Instant) {
        let long: Vec<SocketAddr> = self
            .links
            .values()
            .filter(|l| now.saturating_duration_since(l.since) >= GOOD_AFTER)
            .map(|l| l.addr)
            .collect();
        for addr in long {
            self.mark_good(addr);
        }
    }

    /// A download from the block server at `addr` brought blocks.
    pub fn served(&mut self, addr: SocketAddr, now: Instant) {
        for l in self.links.values_mut().filter(|l| l.addr == addr) {
            l.last_useful = now;
        }
        if !self.known.contains_key(&addr) && !self.banned.contains_key(&addr.ip()) {
            self.remember(addr, Origin::Gossip, now);
        }
        if let Some(k) = self.known.get_mut(&addr) {
            k.served = true;
        }
        self.mark_good(addr);
    }

    /// Addresses link `from` told us of: each usable one is remembered, as room allows.
    pub fn learn(&mut self, addrs: &[SocketAddr], now: Instant) -> usize {
        let mut learned = 0;
        for addr in addrs {
            if !usable(addr)
                || self.known.contains_key(addr)
                || self.banned.contains_key(&addr.ip())
            {
                continue;
            }
            if self.remember(*addr, Origin::Gossip, now) {
                learned += 1;
            }
        }
        learned
    }

    /// Remembers `addr`; when full, in place of the oldest learned address that never served.
    fn remember(&mut self, addr: SocketAddr, origin: Origin, now: Instant) -> bool {
        if self.known.len() >= MAX_KNOWN {
            let oldest = self
                .known
                .iter()
                .filter(|(_, k)| k.origin == Origin::Gossip && !k.good)
                .min_by_key(|(a, k)| (k.learned, **a))
                .map(|(a, _)| *a);
            match oldest {
                Some(a) if !self.dialing.contains(&a) => {
                    self.known.remove(&a);
                }
                _ => return false,
            }
        }
        self.known.insert(addr, Known::new(origin, false, now));
        true
    }

    fn mark_good(&mut self, addr: SocketAddr) {
        if let Some(k) = self.known.get_mut(&addr)
            && !k.good
        {
            k.good = true;
            self.dirty = true;
        }
    }

    fn is_named(&self, addr: &SocketAddr) -> bool {
        self.known
            .get(addr)
            .is_some_and(|k| k.origin == Origin::Named)
    }

    /// Addresses worth telling a peer of, at most [`SHARE`]: the block servers of the links up
    /// now, then others that served well. Never the peer's own.
    pub fn share(&self, to: LinkId) -> Vec<SocketAddr> {
        let own = self.links.get(&to).map(|l| l.addr);
        let mut out: Vec<SocketAddr> = Vec::new();
        let mut linked: Vec<&Link> = self.links.values().collect();
        linked.sort_by_key(|l| (l.since, l.addr));
        for l in linked {
            if Some(l.addr) != own && usable(&l.addr) && !out.contains(&l.addr) {
                out.push(l.addr);
            }
        }
        let mut good: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| k.good && Some(**a) != own && usable(a))
            .map(|(a, _)| *a)
            .collect();
        good.sort();
        for a in good {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out.truncate(SHARE);
        out
    }

    /// Links due a share of addresses at `now`; each is marked as shared.
    pub fn due_shares(&mut self, now: Instant) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> = self
            .links
            .iter_mut()
            .filter(|(_, l)| {
                l.shared_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= SHARE_INTERVAL)
            })
            .map(|(id, l)| {
                l.shared_at = Some(now);
                *id
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The addresses to save, when they changed since last asked.
    pub fn to_save(&mut self) -> Option<Vec<SocketAddr>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        // Proven first (dialled and answered, or served blocks), then the fewest failures.
        let mut good: Vec<(bool, u32, SocketAddr)> = self
            .known
            .iter()
            .filter(|(_, k)| k.good)
            .map(|(a, k)| (!(k.answered || k.served), k.failures, *a))
            .collect();
        good.sort();
        let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
        let mut per_group: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut saved = Vec::new();
        for (_, _, addr) in good {
            let ip = per_ip.entry(addr.ip()).or_default();
            let group = per_group.entry(group(addr.ip())).or_default();
            if *ip >= MAX_SAVED_PER_IP || *group >= MAX_SAVED_PER_GROUP {
                continue;
            }
            *ip += 1;
            *group += 1;
            saved.push(addr);
            if saved.len() == MAX_SAVED {
                break;
            }
        }
        saved.sort();
        Some(saved)
    }
}

impl Known {
    fn new(origin: Origin, good: bool, now: Instant) -> Known {
        Known {
            origin,
            learned: now,
            next_dial: now,
            failures: 0,
            good,
            answered: false,
            served: false,
        }
    }
}

/// The network group of an address, for the saved list's caps: the /16 of an IPv4 address,
/// the /32 of an IPv6 one.
fn group(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => vec![4, v4.octets()[0], v4.octets()[1]],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            vec![6, o[0], o[1], o[2], o[3]]
        }
    }
}

/// 1 s, 2 s, 4 s ... at most a minute.
fn backoff(failures: u32) -> Duration {
    REDIAL_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(REDIAL_MAX)
}

/// An address a node could listen on: a real port, not unspecified, multicast or broadcast.
pub fn usable(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 2607))
    }

    #[test]
    fn named_peers_are_dialled_and_redialled_with_a_growing_back_off() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[addr(1)], &[], t0);
        assert_eq!(l.due(t0), [addr(1)]);
        assert!(l.due(t0).is_empty(), "not twice while dialling");
        l.dial_failed(addr(1), t0);
        assert!(l.due(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(l.due(t0 + Duration::from_secs(1)), [addr(1)]);
        l.dial_failed(addr(1), t0 + Duration::from_secs(1));
        assert!(
            l.due(t0 + Duration::from_millis(2500)).is_empty(),
            "2 s now"
        );
        assert_eq!(l.due(t0 + Duration::from_secs(3)), [addr(1)]);
        let (id, _) = l.up(addr(1), true, 7, t0 + Duration::from_secs(3)).unwrap();
        assert!(l.due(t0 + Duration::from_secs(60)).is_empty(), "linked");
        l.down(id, &Down::Lost, t0 + Duration::from_secs(4));
        assert_eq!(
            l.due(t0 + Duration::from_secs(5)),
            [addr(1)],
            "again after losing it"
        );
        for _ in 0..20 {
            l.dial_failed(addr(1), t0);
        }
        assert_eq!(backoff(20), REDIAL_MAX);
        assert!(
            l.known.contains_key(&addr(1)),
            "a named peer is never forgotten"
        );
    }

    #[test]
    fn a_peer_named_late_is_kept_linked_like_the_others() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[], &[], t0);
        l.learn(&[addr(5)], t0);
        l.add_named(addr(5), t0);
        l.add_named(addr(6), t0);
        assert_eq!(l.due(t0), [addr(5), addr(6)]);
        for _ in 0..10 {
            l.dial_failed(addr(6), t0);
        }
        assert!(l.known.contains_key(&addr(6)), "named: never forgotten");
    }

    #[test]
    fn gossiped_addresses_are_dialled_one_at_a_time_up_to_the_cap() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[], &[], t0);
        let many: Vec<SocketAddr> = (1..=50).map(addr).collect();
        assert_eq!(l.learn(&many, t0), 50);
        let mut dialled = Vec::new();
        let mut t = t0;
        for _ in 0..100 {
            for a in l.due(t) {
                dialled.push((t, a));
                let node = 100 + dialled.len() as u64;
                l.up(a, true, node, t).unwrap();
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(dialled.len(), MAX_OUTBOUND_OTHER, "{dialled:?}");
        for pair in dialled.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= OTHER_DIAL_INTERVAL);
        }
    }

    #[test]
    fn hearsay_that_never_answers_is_forgotten_but_what_served_is_kept() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[], &[addr(2)], t0);
        l.learn(&[addr(3), addr(4)], t0);
        let (id, _) = l.up(addr(4), true, 44, t0).unwrap();
        l.down(id, &Down::Lost, t0);
        for i in 0..MAX_FAILURES {
            for a in [2, 3, 4] {
                l.dial_failed(addr(a), t0 + Duration::from_secs(u64::from(i)));
            }
        }
        assert!(l.known.contains_key(&addr(2)), "saved: it served before");
        assert!(l.known.contains_key(&addr(4)), "it linked once");
        assert!(!l.known.contains_key(&addr(3)), "never answered");
    }

    #[test]
    fn a_flood_of_addresses_keeps_memory_bounded_and_the_good_ones() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[addr(1)], &[addr(2)], t0);
        for round in 0..100u32 {
            let batch: Vec<SocketAddr> = (0..100).map(|i| addr(1000 + round * 100 + i)).collect();
            l.learn(&batch, t0 + Duration::from_millis(u64::from(round)));
        }
        assert_eq!(l.known_len(), MAX_KNOWN);
        assert!(l.known.contains_key(&addr(1)) && l.known.contains_key(&addr(2)));
        let junk: Vec<SocketAddr> = vec![
            "0.0.0.0:2607".parse().unwrap(),
            "10.0.0.1:0".parse().unwrap(),
            "224.0.0.1:2607".parse().unwrap(),
            // The limited broadcast address: never dialled, never passed on.
            SocketAddr::from((std::net::Ipv4Addr::BROADCAST, 2607)),
            "[::]:2607".parse().unwrap(),
        ];
        assert_eq!(l.learn(&junk, t0), 0);
    }

    #[test]
    fn rates_drop_what_is_over_and_invalid_data_bans_the_address() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[], &[], t0);
        let from = addr(9);
        l.admit(from.ip(), (2, 2607), t0).unwrap();
        let (id, _) = l.up(from, false, 2, t0).unwrap();
        let allowed = (0..1000).filter(|_| l.allow(id, Kind::Payment, t0)).count();
        assert_eq!(allowed, PAYMENT_RATE.1 as usize);
        assert!(l.allow(id, Kind::Payment, t0 + Duration::from_secs(1)));
        let addrs = (0..10).filter(|_| l.allow(id, Kind::Addrs, t0)).count();
        assert_eq!(addrs, ADDRS_RATE.1 as usize);
        assert_eq!(l.get(id).unwrap().over, 800 + 7);
        l.down(id, &Down::Invalid(Invalid::TooLong { len: 9, cap: 1 }), t0);
        assert_eq!(l.admit(from.ip(), (2, 2607), t0), Err(Refused::Banned));
        assert_eq!(
            l.admit(from.ip(), (2, 2607), t0 + BAN + Duration::from_secs(1)),
            Ok(None)
        );
        assert_eq!(l.learn(&[from], t0), 0, "nor learned while refused");
    }

    #[test]
    fn inbound_links_are_capped_in_all_and_per_address() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[], &[], t0);
        let ip = addr(5);
        for node in 0..MAX_INBOUND_PER_IP as u64 {
            l.admit(ip.ip(), (10 + node, 2607), t0).unwrap();
            l.up(
                SocketAddr::new(ip.ip(), 3000 + node as u16),
                false,
                10 + node,
                t0,
            )
            .unwrap();
        }
        assert_eq!(l.admit(ip.ip(), (99, 2607), t0), Err(Refused::AddressFull));
        for i in 0..(MAX_INBOUND - MAX_INBOUND_PER_IP) as u32 {
            l.admit(addr(100 + i).ip(), (200 + u64::from(i), 2607), t0)
                .unwrap();
            l.up(addr(100 + i), false, 200 + u64::from(i), t0).unwrap();
        }
        assert_eq!(
            l.admit(addr(999).ip(), (999, 2607), t0),
            Err(Refused::Full(MAX_INBOUND))
        );
        assert_eq!(l.admit(addr(998).ip(), (1, 2607), t0), Err(Refused::Itself));
        assert_eq!(l.admit(addr(997).ip(), (997, 0), t0), Err(Refused::NoPort));
        // A minute on, the one that brought nothing new for longest makes room; those that
        // brought something since do not.
        let first = l
            .iter()
            .filter(|(_, k)| k.addr.ip() == ip.ip())
            .map(|(id, _)| *id)
            .min()
            .unwrap();
        let ids: Vec<LinkId> = l.iter().map(|(id, _)| *id).collect();
        for id in ids {
            if id != first {
                l.useful(id, t0 + Duration::from_secs(1));
            }
        }
        let later = t0 + EVICT_AFTER;
        assert_eq!(
            l.admit(addr(999).ip(), (999, 2607), later),
            Ok(Some(first)),
            "{first} brought nothing for a minute"
        );
        let all: Vec<LinkId> = l.iter().map(|(id, _)| *id).collect();
        for id in all {
            l.useful(id, later);
        }
        assert_eq!(
            l.admit(addr(999).ip(), (999, 2607), later + Duration::from_secs(1)),
            Err(Refused::Full(MAX_INBOUND))
        );
        let quiet = Duration::from_secs(20);
        assert_eq!(l.quiet(t0 + quiet, quiet), Vec::<LinkId>::new());
        assert_eq!(l.quiet(t0 + quiet * 2, quiet).len(), MAX_INBOUND);
    }

    #[test]
    fn two_nodes_dialling_each_other_keep_the_same_one_link() {
        let t0 = Instant::now();
        // Node 3 and node 8 dial each other at once.
        let mut low = Links::new(3, &[addr(8)], &[], t0);
        let mut high = Links::new(8, &[addr(3)], &[], t0);
        let (low_out, _) = low.up(addr(8), true, 8, t0).unwrap();
        let (high_out, _) = high.up(addr(3), true, 3, t0).unwrap();
        // Each now gets the other's dial as an inbound link.
        let at_low = low.up(addr(8), false, 8, t0);
        let at_high = high.up(addr(3), false, 3, t0);
        // Both keep the link node 3 dialled: at 3 its outbound one, at 8 the inbound one.
        assert_eq!(at_low, Err(Refused::Duplicate));
        let (kept, replaced) = at_high.unwrap();
        assert_eq!(replaced, Some(high_out));
        assert!(low.get(low_out).is_some() && high.get(kept).is_some());
        assert_eq!(low.up(addr(1), true, 3, t0), Err(Refused::Itself));
    }

    #[test]
    fn a_link_claiming_a_linked_node_id_from_another_address_never_displaces_it() {
        let t0 = Instant::now();
        // Node 8 keeps a link to node 3 at addr(3), which it dialled.
        let mut l = Links::new(8, &[addr(3)], &[], t0);
        let (real, _) = l.up(addr(3), true, 3, t0).unwrap();
        // A squatter at addr(66) says hello as node 3: the lower id, whose dial would win.
        let (squat, replaced) = l.up(addr(66), false, 3, t0).unwrap();
        assert_eq!(replaced, None, "the real link is not displaced");
        assert!(l.get(real).is_some() && l.get(squat).is_some());
        // The real node 3 dialling in from its own address still settles as before.
        let (kept, replaced) = l.up(addr(3), false, 3, t0).unwrap();
        assert_eq!(replaced, Some(real));
        assert!(l.get(kept).is_some());
        // And a squatter that came first does not keep the real node out: node 3's own link
        // comes up beside it.
        let mut l = Links::new(8, &[], &[], t0);
        let (squat, _) = l.up(addr(66), false, 3, t0).unwrap();
        let (own, replaced) = l.up(addr(3), false, 3, t0).unwrap();
        assert_eq!(replaced, None);
        assert!(l.get(squat).is_some() && l.get(own).is_some());
    }

    #[test]
    fn one_host_cycling_ports_cannot_fill_the_saved_list_or_push_proven_peers_out() {
        let t0 = Instant::now();
        let mut l = Links::none(1);
        // Ten peers this node downloaded from, on their own hosts in one /16.
        for i in 0..10 {
            l.served(addr(100 + i), t0);
        }
        // One IP links in 300 times, each under another port, and stays 30 s each time.
        let squat = |port: u16| SocketAddr::from(([10, 9, 9, 9], port));
        for port in 1_000..1_300 {
            let (id, _) = l.up(squat(port), false, u64::from(port), t0).unwrap();
            l.review(t0 + GOOD_AFTER);
            l.down(id, &Down::Lost, t0 + GOOD_AFTER);
        }
        let saved = l.to_save().unwrap();
        for i in 0..10 {
            assert!(
                saved.contains(&addr(100 + i)),
                "a proven peer was pushed out"
            );
        }
        let from_squat = saved.iter().filter(|a| a.ip() == squat(0).ip()).count();
        assert_eq!(from_squat, MAX_SAVED_PER_IP);
        // A /16 holds at most its share, however many hosts it has.
        let mut l = Links::none(1);
        for i in 0..50 {
            l.served(addr(i + 1), t0);
        }
        assert_eq!(l.to_save().unwrap().len(), MAX_SAVED_PER_GROUP);
    }

    #[test]
    fn a_saved_address_that_stops_answering_ages_out() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[], &[addr(7)], t0);
        l.dirty = true;
        assert_eq!(l.to_save(), Some(vec![addr(7)]));
        let mut now = t0;
        for _ in 0..FORGET_GOOD_AFTER {
            let due = l.due(now);
            assert_eq!(due, [addr(7)]);
            l.dial_failed(addr(7), now);
            now += REDIAL_MAX + OTHER_DIAL_INTERVAL;
        }
        assert_eq!(
            l.to_save(),
            Some(vec![]),
            "still saved after {FORGET_GOOD_AFTER} failures"
        );
    }

    #[test]
    fn what_served_well_is_shared_and_saved() {
        let t0 = Instant::now();
        let mut l = Links::new(1, &[addr(1)], &[], t0);
        let (a, _) = l.up(addr(1), true, 11, t0).unwrap();
        let (b, _) = l.up(addr(2), false, 12, t0).unwrap();
        assert_eq!(l.share(b), [addr(1)], "not its own address");
        assert_eq!(l.share(a), [addr(2)]);
        assert_eq!(l.to_save(), None);
        l.review(t0 + GOOD_AFTER);
        assert_eq!(l.to_save(), Some(vec![addr(1), addr(2)]));
        assert_eq!(l.to_save(), None, "saved once per change");
        l.served(addr(3), t0);
        assert_eq!(l.to_save(), Some(vec![addr(1), addr(2), addr(3)]));
        assert_eq!(l.due_shares(t0), {
            let mut v = vec![a, b];
            v.sort();
            v
        });
        assert!(l.due_shares(t0 + Duration::from_secs(1)).is_empty());
    }
}
