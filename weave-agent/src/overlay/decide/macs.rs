//! The MAC tables every data plane learns into: local MACs (seen on this
//! host's bridge) and remote ones (seen behind peers), the journal of remote
//! changes for a data plane that mirrors them into the kernel, and the limit
//! on how fast one peer can make this peer learn.
//!
//! The limit exists because learning a new remote MAC is not free: on the
//! xdp data plane each one becomes a write to the kernel's `PEER_MACS` map on
//! the receiving thread. A neighbour that cycles source MACs (broken or
//! hostile) would otherwise cost one map write per frame; past the limit its
//! new MACs are simply not learnt (frames are still delivered, replies to
//! those MACs flood), and `macs_not_learnt` counts them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::mac::Mac;
use crate::overlay::decide::mac_table::{Learnt, MacTable};
use crate::overlay::forwarding::ShortId;

/// New or moved MACs one peer may make this peer learn at once…
const LEARN_BURST: u32 = 512;
/// …and per second after that: far above what containers starting behind
/// one host need, far below a frame rate.
const LEARN_PER_SECOND: u32 = 256;

/// Where MAC addresses were seen. Two tables, so that addresses learnt from
/// peers can never push out the local ones.
#[derive(Debug, Default)]
pub struct Macs {
    /// Seen as the source of frames from this host's bridge.
    pub local: MacTable<()>,
    /// Seen as the source of frames from peers.
    pub remote: MacTable<ShortId>,
    /// Changes to `remote`, for a data plane that mirrors it into the kernel
    /// (`AF_XDP`: the datapath program looks destinations up there). `None`
    /// for the plain data plane, which keeps no mirror.
    pub journal: Option<MacJournal>,
    /// Per origin peer: how many more new MACs it may make us learn now.
    allowance: HashMap<ShortId, Allowance>,
    /// Remote MACs not learnt because their peer was over its allowance.
    pub not_learnt: u64,
}

/// Changes to the remote table since the mirror last took them. Bounded:
/// past [`MacJournal::CAPACITY`] changes it only remembers that it
/// overflowed, and the mirror resynchronises as a whole.
#[derive(Debug, Default)]
pub struct MacJournal {
    pub learnt: Vec<(Mac, ShortId)>,
    pub forgotten: Vec<Mac>,
    pub overflowed: bool,
}

impl MacJournal {
    pub const CAPACITY: usize = 1024;

    const fn full(&self) -> bool {
        self.learnt.len() + self.forgotten.len() >= Self::CAPACITY
    }

    pub const fn is_empty(&self) -> bool {
        self.learnt.is_empty() && self.forgotten.is_empty() && !self.overflowed
    }

    /// Moves every change into `out` (keeping both allocations): a worker
    /// takes them under the MAC lock and applies them after it.
    pub fn move_into(&mut self, out: &mut Self) {
        out.learnt.append(&mut self.learnt);
        out.forgotten.append(&mut self.forgotten);
        out.overflowed |= std::mem::take(&mut self.overflowed);
    }
}

/// A token bucket: [`LEARN_BURST`] tokens, refilled at [`LEARN_PER_SECOND`].
#[derive(Clone, Copy, Debug)]
struct Allowance {
    tokens: u32,
    since: Instant,
}

impl Allowance {
    const fn full(now: Instant) -> Self {
        Self {
            tokens: LEARN_BURST,
            since: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        let earned = elapsed.as_millis() as u64 * u64::from(LEARN_PER_SECOND) / 1000;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(LEARN_BURST)) as u32;
            self.since = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Macs {
    /// Macs whose remote changes are journaled for a mirror.
    pub fn mirrored() -> Self {
        Self {
            journal: Some(MacJournal::default()),
            ..Self::default()
        }
    }

    /// Learns that `src` lives behind `origin`, within `origin`'s allowance
    /// for new and moved MACs (a MAC already known there is always
    /// refreshed). Returns whether it was learnt.
    pub fn learn_remote(&mut self, src: Mac, origin: ShortId, now: Instant) -> bool {
        if self.remote.lookup(&src, now) != Some(origin)
            && !self
                .allowance
                .entry(origin)
                .or_insert_with(|| Allowance::full(now))
                .take(now)
        {
            self.not_learnt += 1;
            return false;
        }
        if matches!(
            self.remote.learn(src, origin, now),
            Learnt::New | Learnt::Moved { .. }
        ) {
            self.journal_learnt(src, origin);
        }
        true
    }

    /// Learns that `src` is on this host's bridge; if it lived behind a peer,
    /// it has moved here and is forgotten there.
    pub fn learn_local(&mut self, src: Mac, now: Instant) {
        if self.local.learn(src, (), now) == Learnt::New && self.remote.forget(&src).is_some() {
            self.journal_forgotten(src);
        }
    }

    fn journal_learnt(&mut self, mac: Mac, peer: ShortId) {
        if let Some(journal) = &mut self.journal {
            if journal.full() {
                journal.overflowed = true;
            } else {
                journal.learnt.push((mac, peer));
            }
        }
    }

    fn journal_forgotten(&mut self, mac: Mac) {
        if let Some(journal) = &mut self.journal {
            if journal.full() {
                journal.overflowed = true;
            } else {
                journal.forgotten.push(mac);
            }
        }
    }

    /// Forgets what expired; cheap when nothing did. Allowances of peers
    /// not heard from for a while go too, so the map stays as small as the
    /// set of active peers.
    pub fn expire(&mut self, now: Instant) {
        self.local.expire(now);
        self.remote.expire(now);
        const IDLE: Duration = Duration::from_mins(1);
        if self.allowance.len() > 64 {
            self.allowance
                .retain(|_, a| now.saturating_duration_since(a.since) < IDLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn a_peer_cycling_macs_is_limited_and_counted_and_others_are_not() {
        let mut macs = Macs::mirrored();
        let now = Instant::now();
        let (noisy, quiet) = (ShortId(1), ShortId(2));
        let learnt = (0..2000)
            .filter(|&n| macs.learn_remote(mac(n), noisy, now))
            .count();
        assert_eq!(learnt, LEARN_BURST as usize);
        assert_eq!(macs.not_learnt, 2000 - u64::from(LEARN_BURST));
        // Known MACs are still refreshed, and another peer has its own allowance.
        assert!(macs.learn_remote(mac(0), noisy, now));
        assert!(macs.learn_remote(mac(1_000_000), quiet, now));
        // The allowance comes back with time.
        let later = now + Duration::from_secs(1);
        let learnt = (5000..6000)
            .filter(|&n| macs.learn_remote(mac(n), noisy, later))
            .count();
        assert_eq!(learnt, LEARN_PER_SECOND as usize);
    }

    #[test]
    fn changes_are_journaled_until_the_journal_overflows() {
        let mut macs = Macs::mirrored();
        let now = Instant::now();
        macs.learn_remote(mac(1), ShortId(1), now);
        macs.learn_local(mac(1), now);
        let journal = macs.journal.as_mut().unwrap();
        assert_eq!(journal.learnt, vec![(mac(1), ShortId(1))]);
        assert_eq!(journal.forgotten, vec![mac(1)]);
        for n in 0..MacJournal::CAPACITY as u32 {
            macs.learn_remote(mac(100 + n), ShortId(3 + n as u16 % 10), now);
        }
        assert!(macs.journal.as_ref().unwrap().overflowed);
    }
}
