//! Judging downloads, and the sync values each role uses.

use std::time::Duration;

use mvbc_protocol::net::FetchError;

use crate::apply::ApplyError;

/// The sync values that differ between a miner and a wallet, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// For log lines: "miner" or "wallet".
    pub name: &'static str,
    /// How long a peer whose download failed is passed over.
    pub peer_backoff: Duration,
}

impl Role {
    /// A miner runs for days and hears every peer every few seconds: a peer that failed it
    /// may wait half a minute, so a liar costs it one download per 30 s.
    pub const MINER: Role = Role {
        name: "miner",
        peer_backoff: Duration::from_secs(30),
    };
    /// A wallet syncs for seconds (`sync --once`) and must try the next miner soon.
    pub const WALLET: Role = Role {
        name: "wallet",
        peer_backoff: Duration::from_secs(2),
    };
}

/// Why a download from a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The connection or a frame failed, the peer broke the protocol, or a block it sent
    /// could not be added ([`FetchError::Refused`] holds the [`ApplyError`]).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It stopped sending before our chain had the work it announced: it lied, or lost blocks.
    #[error("{blocks} blocks served, short of the work it announced")]
    ShortOfWork {
        /// New blocks it did serve.
        blocks: u64,
    },
}

impl DownloadError {
    /// The error adding a delivered block, if that is what ended the download.
    pub fn apply_error(&self) -> Option<&ApplyError> {
        match self {
            DownloadError::Fetch(FetchError::Refused(e)) => e.downcast_ref::<ApplyError>(),
            _ => None,
        }
    }

    /// Whether the peer is to blame (and should be passed over): not when we stopped the
    /// download (Ctrl-C, a deadline), nor when our own store failed.
    pub fn blames_peer(&self) -> bool {
        let ours = matches!(self.apply_error(), Some(ApplyError::Store { .. }));
        !ours && !matches!(self, DownloadError::Fetch(FetchError::Cancelled(_)))
    }
}

/// Judges a finished download from a peer that announced `announced_work`: `Ok` with the new
/// blocks it served when our chain (now at `ours`) has that much work.
pub fn judge(blocks: u64, ours: u128, announced_work: u128) -> Result<u64, DownloadError> {
    if ours < announced_work {
        Err(DownloadError::ShortOfWork { blocks })
    } else {
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_short_of_the_announced_work_blames_the_peer() {
        assert_eq!(judge(3, 10, 10).unwrap(), 3);
        assert_eq!(judge(0, 11, 10).unwrap(), 0);
        let err = judge(2, 9, 10).unwrap_err();
        assert!(err.blames_peer());
        assert_eq!(
            err.to_string(),
            "2 blocks served, short of the work it announced"
        );
    }

    #[test]
    fn the_roles_differ_only_where_named() {
        assert!(Role::MINER.peer_backoff > Role::WALLET.peer_backoff);
    }
}
