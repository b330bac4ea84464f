//! Password mode on the control connection: the Noise protocol
//! (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, through the `snow` crate) with
//! a pre-shared key stretched from the password, then every message
//! encrypted by Noise's transport ciphers, and the data plane's keys derived
//! from the same handshake.
//!
//! - The password becomes the 32-byte PSK through Argon2id with a fixed,
//!   protocol-specific salt (every peer must get the same key without
//!   talking first): an eavesdropper who records a handshake can only test
//!   password guesses at Argon2's cost.
//! - `NNpsk0`: two messages, fresh ephemeral keys on both sides (forward
//!   secrecy), the PSK mixed in before the first, so the first message
//!   already fails to authenticate under a different password and the
//!   responder refuses before anything else. The two hellos (sent in clear
//!   before, for the protocol check and the refusal reasons) are the
//!   prologue: a change to either in flight fails the handshake.
//! - After it, the stream is a sequence of Noise transport messages, each
//!   framed by a big-endian `u16` length (Noise's limit is 65535 bytes);
//!   their plaintexts concatenated are the usual length-prefixed messages.
//!   Nonces are implicit counters per direction (TCP keeps order).
//! - Data keys: HKDF-SHA256 over the handshake's final split keys, salted
//!   with the handshake hash, expanded under one label per direction, so
//!   they are secret, fresh per connection, different per direction and
//!   independent of the control channel's own keys.
//!
//! Pure: no I/O, so the parsing of handshake and transport messages can be
//! fuzzed directly.

use std::fmt;
use std::sync::Arc;

use hkdf::Hkdf;
use sha2::Sha256;
use snow::{HandshakeState, StatelessTransportState};
use zeroize::Zeroizing;

use crate::overlay::seal::KeyBytes;

/// The Noise protocol name: pattern, DH, cipher, hash.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the prologue and the key derivations: a key or transcript of
/// this protocol is useless in any other.
const LABEL: &[u8] = b"weave-rs password mode v1";
/// Argon2's salt: fixed, so that every peer derives the same key.
const PSK_SALT: &[u8] = b"weave-rs password mode v1 psk salt";
/// Argon2id cost: 19 MiB, 2 passes, 1 lane (OWASP's minimum for Argon2id).
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_PASSES: u32 = 2;

/// The largest Noise message, and the largest plaintext one carries.
pub const MAX_RECORD: usize = 65_535;
pub const TAG_LEN: usize = 16;
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
/// The record length prefix.
pub const RECORD_LEN_BYTES: usize = 2;
/// Longest handshake message: an ephemeral key (32) and a tag (16).
pub const MAX_HANDSHAKE_MESSAGE: usize = 32 + TAG_LEN;

/// The pre-shared key, derived once from the password at launch.
#[derive(Clone)]
pub struct Psk(Zeroizing<[u8; 32]>);

impl Psk {
    pub fn from_password(password: &[u8]) -> Result<Self, String> {
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32))
            .map_err(|e| e.to_string())?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, PSK_SALT, &mut key[..])
            .map_err(|e| format!("deriving the key from the password: {e}"))?;
        Ok(Self(key))
    }

    /// A key as is, for tests and fuzzing.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(Zeroizing::new(key))
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Why the handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// The peer's message does not authenticate: almost always another password.
    #[error("authentication failed (the passwords differ)")]
    Authentication,
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    #[error("noise: {0}")]
    Internal(String),
}

/// Which side of the Noise handshake a peer plays: the smaller peer name
/// initiates, so both sides agree without knowing who dialled.
pub fn we_initiate(ours: &crate::peer_name::PeerName, theirs: &crate::peer_name::PeerName) -> bool {
    ours < theirs
}

/// The prologue both sides feed Noise: the label and the two hellos as
/// sent, the initiator's first.
pub fn prologue(initiator_hello: &[u8], responder_hello: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(LABEL.len() + 8 + initiator_hello.len() + responder_hello.len());
    p.extend_from_slice(LABEL);
    for hello in [initiator_hello, responder_hello] {
        p.extend_from_slice(&(hello.len() as u32).to_be_bytes());
        p.extend_from_slice(hello);
    }
    p
}

/// One side of a handshake in progress.
pub struct Handshake {
    state: HandshakeState,
    initiator: bool,
}

fn internal(e: snow::Error) -> NoiseError {
    NoiseError::Internal(e.to_string())
}

impl Handshake {
    pub fn new(psk: &Psk, prologue: &[u8], initiator: bool) -> Result<Self, NoiseError> {
        let params = NOISE_PARAMS
            .parse()
            .map_err(|e: snow::Error| NoiseError::Internal(e.to_string()))?;
        let builder = snow::Builder::new(params)
            .psk(0, &psk.0)
            .map_err(internal)?
            .prologue(prologue)
            .map_err(internal)?;
        let state = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(internal)?;
        Ok(Self { state, initiator })
    }

    pub const fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Our next handshake message.
    pub fn write(&mut self) -> Result<Vec<u8>, NoiseError> {
        let mut out = vec![0u8; MAX_HANDSHAKE_MESSAGE];
        let n = self.state.write_message(&[], &mut out).map_err(internal)?;
        out.truncate(n);
        Ok(out)
    }

    /// The peer's next handshake message; any payload is refused.
    pub fn read(&mut self, message: &[u8]) -> Result<(), NoiseError> {
        if message.len() > MAX_HANDSHAKE_MESSAGE {
            return Err(NoiseError::Malformed(format!(
                "{} bytes, at most {MAX_HANDSHAKE_MESSAGE}",
                message.len()
            )));
        }
        let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
        match self.state.read_message(message, &mut payload) {
            Ok(0) => Ok(()),
            Ok(n) => Err(NoiseError::Malformed(format!(
                "unexpected payload of {n} bytes"
            ))),
            Err(snow::Error::Decrypt) => Err(NoiseError::Authentication),
            Err(e) => Err(NoiseError::Malformed(e.to_string())),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The transport ciphers and the data keys, once both messages passed.
    pub fn finish(mut self) -> Result<(Channel, DataKeys), NoiseError> {
        if !self.state.is_handshake_finished() {
            return Err(NoiseError::Internal("handshake not finished".into()));
        }
        let (k1, k2) = self.state.dangerously_get_raw_split();
        let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
        let keys = DataKeys::derive(&k1, &k2, self.state.get_handshake_hash(), self.initiator);
        let transport = self
            .state
            .into_stateless_transport_mode()
            .map_err(internal)?;
        Ok((Channel { transport }, keys))
    }
}

/// The data plane's keys for one connection, from our side.
pub struct DataKeys {
    pub send: KeyBytes,
    pub recv: KeyBytes,
}

impl DataKeys {
    fn derive(k1: &[u8; 32], k2: &[u8; 32], handshake_hash: &[u8], initiator: bool) -> Self {
        let mut ikm = Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(k1);
        ikm[32..].copy_from_slice(k2);
        let hk = Hkdf::<Sha256>::new(Some(handshake_hash), &ikm[..]);
        let expand = |direction: &[u8]| {
            let mut info = Vec::with_capacity(LABEL.len() + direction.len());
            info.extend_from_slice(LABEL);
            info.extend_from_slice(direction);
            let mut key = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA256's limit: cannot fail.
            let _ = hk.expand(&info, &mut key[..]);
            key
        };
        let i2r = expand(b" data initiator to responder");
        let r2i = expand(b" data responder to initiator");
        if initiator {
            Self {
                send: i2r,
                recv: r2i,
            }
        } else {
            Self {
                send: r2i,
                recv: i2r,
            }
        }
    }
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKeys(..)")
    }
}

/// The encrypted control stream after the handshake: both directions'
/// ciphers, used through [`Sealer`] (writer) and [`Opener`] (reader), each
/// keeping its own nonce.
pub struct Channel {
    transport: StatelessTransportState,
}

impl Channel {
    pub fn split(self) -> (Sealer, Opener) {
        let shared = Arc::new(self.transport);
        (
            Sealer {
                transport: Arc::clone(&shared),
                nonce: 0,
            },
            Opener {
                transport: shared,
                nonce: 0,
                pending: Vec::new(),
            },
        )
    }
}

/// Encrypts what we send.
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// `bytes` (any length) as records, appended to `out`.
    pub fn seal(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        for chunk in bytes.chunks(MAX_RECORD_PLAINTEXT) {
            let start = out.len();
            out.resize(start + RECORD_LEN_BYTES + chunk.len() + TAG_LEN, 0);
            let n = self
                .transport
                .write_message(self.nonce, chunk, &mut out[start + RECORD_LEN_BYTES..])
                .map_err(internal)?;
            self.nonce += 1;
            out[start..start + RECORD_LEN_BYTES].copy_from_slice(&(n as u16).to_be_bytes());
            out.truncate(start + RECORD_LEN_BYTES + n);
        }
        Ok(())
    }
}

/// Decrypts what we receive: holds at most one partial record plus what
/// was fed since the last call to [`Opener::open`].
pub struct Opener {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    pending: Vec<u8>,
}

impl Opener {
    /// Feeds bytes from the stream; the plaintext of every complete record
    /// goes to `out`. An error (a record that does not authenticate) is
    /// final: the connection is to be dropped.
    pub fn open(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(header) = self.pending[start..].first_chunk::<RECORD_LEN_BYTES>() {
            let len = usize::from(u16::from_be_bytes(*header));
            let body = start + RECORD_LEN_BYTES;
            if self.pending.len() < body + len {
                break;
            }
            if len < TAG_LEN {
                return Err(NoiseError::Malformed(format!("record of {len} bytes")));
            }
            let at = out.len();
            out.resize(at + len - TAG_LEN, 0);
            match self.transport.read_message(
                self.nonce,
                &self.pending[body..body + len],
                &mut out[at..],
            ) {
                Ok(n) => out.truncate(at + n),
                Err(e) => {
                    // Nothing of a record that failed is left in `out`.
                    out.truncate(at);
                    return Err(match e {
                        snow::Error::Decrypt => NoiseError::Authentication,
                        e => NoiseError::Malformed(e.to_string()),
                    });
                }
            }
            self.nonce += 1;
            start = body + len;
        }
        self.pending.drain(..start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Side = (Channel, DataKeys);

    fn handshake(a: &Psk, b: &Psk) -> Result<(Side, Side), NoiseError> {
        let p = prologue(b"hello i", b"hello r");
        let mut i = Handshake::new(a, &p, true)?;
        let mut r = Handshake::new(b, &p, false)?;
        r.read(&i.write()?)?;
        i.read(&r.write()?)?;
        assert!(i.is_finished() && r.is_finished());
        Ok((i.finish()?, r.finish()?))
    }

    #[test]
    fn same_password_agrees_on_keys_per_direction() {
        let psk = Psk::from_password(b"s3cret").unwrap();
        let ((ci, ki), (cr, kr)) = handshake(&psk, &psk).unwrap();
        assert_eq!(*ki.send, *kr.recv);
        assert_eq!(*ki.recv, *kr.send);
        assert_ne!(*ki.send, *ki.recv);

        // And the control channel works both ways, over record boundaries.
        let (mut si, mut oi) = ci.split();
        let (mut sr, mut or) = cr.split();
        let big: Vec<u8> = (0..200_000u32).map(|n| n as u8).collect();
        let mut wire = Vec::new();
        si.seal(&big, &mut wire).unwrap();
        si.seal(b"second", &mut wire).unwrap();
        assert!(!wire.windows(6).any(|w| w == b"second"));
        let mut got = Vec::new();
        for chunk in wire.chunks(1000) {
            or.open(chunk, &mut got).unwrap();
        }
        assert_eq!(&got[..big.len()], &*big);
        assert_eq!(&got[big.len()..], b"second");
        let mut back = Vec::new();
        sr.seal(b"reply", &mut back).unwrap();
        let mut got = Vec::new();
        oi.open(&back, &mut got).unwrap();
        assert_eq!(got, b"reply");
        // A flipped bit kills the stream.
        back.clear();
        sr.seal(b"again", &mut back).unwrap();
        back[5] ^= 1;
        assert_eq!(oi.open(&back, &mut got), Err(NoiseError::Authentication));
    }

    #[test]
    fn fresh_keys_per_connection() {
        let psk = Psk::from_bytes([1; 32]);
        let ((_, a), _) = handshake(&psk, &psk).unwrap();
        let ((_, b), _) = handshake(&psk, &psk).unwrap();
        assert_ne!(*a.send, *b.send);
    }

    #[test]
    fn a_different_password_fails_at_the_first_message() {
        let p = prologue(b"i", b"r");
        let mut i = Handshake::new(&Psk::from_password(b"one").unwrap(), &p, true).unwrap();
        let mut r = Handshake::new(&Psk::from_password(b"two").unwrap(), &p, false).unwrap();
        assert_eq!(r.read(&i.write().unwrap()), Err(NoiseError::Authentication));
    }

    #[test]
    fn a_changed_hello_fails_the_handshake() {
        let psk = Psk::from_bytes([2; 32]);
        let mut i = Handshake::new(&psk, &prologue(b"i", b"r"), true).unwrap();
        let mut r = Handshake::new(&psk, &prologue(b"i", b"R"), false).unwrap();
        assert_eq!(r.read(&i.write().unwrap()), Err(NoiseError::Authentication));
    }

    #[test]
    fn psk_derivation_is_stable_and_password_specific() {
        let a = Psk::from_password(b"pw").unwrap();
        assert_eq!(*a.0, *Psk::from_password(b"pw").unwrap().0);
        assert_ne!(*a.0, *Psk::from_password(b"pw2").unwrap().0);
        assert_eq!(format!("{a:?}"), "Psk(..)");
    }

    #[test]
    fn garbage_handshake_messages_are_errors() {
        let psk = Psk::from_bytes([3; 32]);
        for msg in [&[][..], &[0u8; 31], &[0u8; 48], &[0xff; 49], &[7u8; 200]] {
            let mut r = Handshake::new(&psk, b"p", false).unwrap();
            assert!(r.read(msg).is_err(), "{} bytes", msg.len());
        }
    }
}
