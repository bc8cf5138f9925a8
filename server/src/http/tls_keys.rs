//! TLS 1.3 record protection that keeps only the key bytes between records.
//!
//! rustls's ring provider keeps each direction's key expanded (ring's `LessSafeKey`:
//! the AES round keys and the GCM tables, sized for the largest algorithm whatever the
//! suite): 560 bytes a direction, held by every connection for its whole life. An event
//! stream idles far more than it writes, so here a connection keeps the 16 or 32 key
//! bytes and the IV, and each record expands its key anew (for AES-GCM about as long as
//! sealing a small record; both are small beside the socket write the record goes out
//! with: `ci/bench.sh fanout-tls` measures the whole).
//!
//! - [`provider`]: ring's provider with its TLS 1.3 suites' record protection replaced
//!   (the same suites, hashes and key schedule; TLS 1.2 suites are ring's own).
//! - The record format is RFC 8446 §5.2's, as rustls's own: the content type after the
//!   payload, the record header as additional data, the nonce the IV XOR the sequence.

use std::sync::OnceLock;

use ring::aead::{self, Aad, LessSafeKey, Nonce as RingNonce, UnboundKey};
use rustls::crypto::cipher::{
    make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter, Nonce,
    OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::{
    CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite,
    Tls13CipherSuite,
};

/// ring's default provider, its TLS 1.3 suites protecting records with [`CompactAead`].
pub fn provider() -> CryptoProvider {
    let compact = suites();
    let cipher_suites = ring_provider::default_provider()
        .cipher_suites
        .into_iter()
        .map(|suite| match suite {
            SupportedCipherSuite::Tls13(ring) => {
                let ours = compact.iter().find(|ours| ours.common.suite == ring.common.suite);
                // A TLS 1.3 suite this module does not know keeps ring's record keys.
                ours.map_or(suite, SupportedCipherSuite::Tls13)
            }
            tls12 => tls12,
        })
        .collect();
    CryptoProvider { cipher_suites, ..ring_provider::default_provider() }
}

/// The three TLS 1.3 suites, ring's in everything but record protection (built once:
/// rustls wants them `'static`).
pub(super) fn suites() -> &'static [Tls13CipherSuite; 3] {
    static SUITES: OnceLock<[Tls13CipherSuite; 3]> = OnceLock::new();
    SUITES.get_or_init(|| {
        use ring_provider::cipher_suite::{
            TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
        };
        [
            with_compact_keys(TLS13_AES_128_GCM_SHA256, &AES_128_GCM),
            with_compact_keys(TLS13_AES_256_GCM_SHA384, &AES_256_GCM),
            with_compact_keys(TLS13_CHACHA20_POLY1305_SHA256, &CHACHA20_POLY1305),
        ]
    })
}

fn with_compact_keys(suite: SupportedCipherSuite, aead_alg: &'static CompactAead) -> Tls13CipherSuite {
    let SupportedCipherSuite::Tls13(ring) = suite else { unreachable!("only TLS 1.3 suites are given") };
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: ring.common.suite,
            hash_provider: ring.common.hash_provider,
            confidentiality_limit: ring.common.confidentiality_limit,
        },
        hkdf_provider: ring.hkdf_provider,
        aead_alg,
        quic: ring.quic,
    }
}

static AES_128_GCM: CompactAead = CompactAead { alg: &aead::AES_128_GCM, kind: Kind::Aes128Gcm };
static AES_256_GCM: CompactAead = CompactAead { alg: &aead::AES_256_GCM, kind: Kind::Aes256Gcm };
static CHACHA20_POLY1305: CompactAead = CompactAead { alg: &aead::CHACHA20_POLY1305, kind: Kind::Chacha20Poly1305 };

/// Which `ConnectionTrafficSecrets` the keys of an algorithm are.
#[derive(Clone, Copy)]
enum Kind {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// A TLS 1.3 AEAD whose encrypters and decrypters hold the raw key.
struct CompactAead {
    alg: &'static aead::Algorithm,
    kind: Kind,
}

impl Tls13AeadAlgorithm for CompactAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(RecordKey { alg: self.alg, key, iv })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(RecordKey { alg: self.alg, key, iv })
    }

    fn key_len(&self) -> usize {
        self.alg.key_len()
    }

    fn extract_keys(&self, key: AeadKey, iv: Iv) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(match self.kind {
            Kind::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            Kind::Aes256Gcm => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
            Kind::Chacha20Poly1305 => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
        })
    }
}

/// One direction's key: the bytes (zeroed on drop by `AeadKey`) and the IV.
struct RecordKey {
    alg: &'static aead::Algorithm,
    key: AeadKey,
    iv: Iv,
}

impl RecordKey {
    /// The key expanded for one record.
    fn expand(&self) -> Option<LessSafeKey> {
        let bytes = self.key.as_ref().get(..self.alg.key_len())?;
        UnboundKey::new(self.alg, bytes).ok().map(LessSafeKey::new)
    }

    fn nonce(&self, seq: u64) -> RingNonce {
        RingNonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0)
    }
}

impl MessageEncrypter for RecordKey {
    fn encrypt(&mut self, msg: OutboundPlainMessage<'_>, seq: u64) -> Result<OutboundOpaqueMessage, Error> {
        let key = self.expand().ok_or(Error::EncryptError)?;
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        key.seal_in_place_append_tag(self.nonce(seq), Aad::from(make_tls13_aad(total_len)), &mut payload)
            .map_err(|_| Error::EncryptError)?;
        // TLS 1.3 records carry the legacy version 1.2 (RFC 8446 §5.1).
        Ok(OutboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + self.alg.tag_len()
    }
}

impl MessageDecrypter for RecordKey {
    fn decrypt<'a>(&mut self, mut msg: InboundOpaqueMessage<'a>, seq: u64) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        // (ring refuses a record shorter than its tag.)
        let key = self.expand().ok_or(Error::DecryptError)?;
        let aad = Aad::from(make_tls13_aad(payload.len()));
        let plain_len = key.open_in_place(self.nonce(seq), aad, payload).map_err(|_| Error::DecryptError)?.len();
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::cipher::OutboundChunks;

    use super::*;

    fn stock(suite: SupportedCipherSuite) -> &'static dyn Tls13AeadAlgorithm {
        let SupportedCipherSuite::Tls13(suite) = suite else { unreachable!() };
        suite.aead_alg
    }

    fn key(fill: u8) -> (AeadKey, Iv) {
        (AeadKey::from([fill; 32]), Iv::from([fill ^ 0x5a; 12]))
    }

    /// A record sealed by `encrypter`, as it travels (its payload).
    fn seal(encrypter: &mut dyn MessageEncrypter, typ: ContentType, data: &[u8], seq: u64) -> Vec<u8> {
        let plain =
            OutboundPlainMessage { typ, version: ProtocolVersion::TLSv1_2, payload: OutboundChunks::Single(data) };
        let sealed = encrypter.encrypt(plain, seq).unwrap();
        assert_eq!(sealed.typ, ContentType::ApplicationData, "every TLS 1.3 record is application data outside");
        assert_eq!(sealed.payload.as_ref().len(), encrypter.encrypted_payload_len(data.len()));
        sealed.payload.as_ref().to_vec()
    }

    fn open(
        decrypter: &mut dyn MessageDecrypter,
        mut record: Vec<u8>,
        seq: u64,
    ) -> Result<(ContentType, Vec<u8>), Error> {
        let msg = InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut record);
        decrypter.decrypt(msg, seq).map(|plain| (plain.typ, plain.payload.to_vec()))
    }

    /// Records sealed here open with ring's own TLS 1.3 keys and the other way round,
    /// for each suite with a 32-byte key (ring's own takes the key at its exact length).
    #[test]
    fn records_cross_with_rings_own_keys_both_ways() {
        use ring_provider::cipher_suite::{TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256};
        for (ours, theirs) in
            [(&AES_256_GCM, TLS13_AES_256_GCM_SHA384), (&CHACHA20_POLY1305, TLS13_CHACHA20_POLY1305_SHA256)]
        {
            let theirs = stock(theirs);
            for (seq, typ, data) in [
                (0, ContentType::ApplicationData, &b"data: x\n\n"[..]),
                (7, ContentType::Handshake, b""),
                (1 << 40, ContentType::Alert, b"\x01\x00"),
            ] {
                let (k, iv) = key(seq as u8 + 1);
                let record = seal(&mut *ours.encrypter(k, iv), typ, data, seq);
                let (k, iv) = key(seq as u8 + 1);
                assert_eq!(open(&mut *theirs.decrypter(k, iv), record, seq).unwrap(), (typ, data.to_vec()));
                let (k, iv) = key(seq as u8 + 1);
                let record = seal(&mut *theirs.encrypter(k, iv), typ, data, seq);
                let (k, iv) = key(seq as u8 + 1);
                assert_eq!(open(&mut *ours.decrypter(k, iv), record, seq).unwrap(), (typ, data.to_vec()));
            }
        }
    }

    /// A changed byte, another sequence number, another key or a record shorter than a
    /// tag does not open; AES-128's 16-byte key is taken from the front of the key bytes.
    #[test]
    fn a_record_opens_only_whole_with_its_key_and_sequence() {
        for alg in [&AES_128_GCM, &AES_256_GCM, &CHACHA20_POLY1305] {
            let (k, iv) = key(3);
            let record = seal(&mut *alg.encrypter(k, iv), ContentType::ApplicationData, b"id: 1\ndata: y\n\n", 5);
            let opens = |record: Vec<u8>, seq: u64, fill: u8| {
                let (k, iv) = key(fill);
                open(&mut *alg.decrypter(k, iv), record, seq)
            };
            assert_eq!(opens(record.clone(), 5, 3).unwrap().1, b"id: 1\ndata: y\n\n");
            for at in [0, record.len() / 2, record.len() - 1] {
                let mut changed = record.clone();
                changed[at] ^= 1;
                assert!(matches!(opens(changed, 5, 3), Err(Error::DecryptError)), "byte {at} changed");
            }
            assert!(matches!(opens(record.clone(), 6, 3), Err(Error::DecryptError)));
            assert!(matches!(opens(record.clone(), 5, 4), Err(Error::DecryptError)));
            // Another key with the same IV.
            let (_, iv) = key(3);
            let other = open(&mut *alg.decrypter(AeadKey::from([4; 32]), iv), record.clone(), 5);
            assert!(matches!(other, Err(Error::DecryptError)));
            assert!(matches!(opens(record[..alg.alg.tag_len() - 1].to_vec(), 5, 3), Err(Error::DecryptError)));
        }
        let mut aes128 = [0u8; 32];
        aes128[..16].fill(9);
        let record = seal(
            &mut *AES_128_GCM.encrypter(AeadKey::from(aes128), Iv::from([1; 12])),
            ContentType::ApplicationData,
            b"z",
            0,
        );
        let mut other_tail = [7u8; 32];
        other_tail[..16].fill(9);
        let (typ, data) =
            open(&mut *AES_128_GCM.decrypter(AeadKey::from(other_tail), Iv::from([1; 12])), record, 0).unwrap();
        assert_eq!((typ, data), (ContentType::ApplicationData, b"z".to_vec()));
    }

    #[test]
    fn the_provider_replaces_every_tls13_suites_record_keys_and_keeps_the_rest() {
        let ring = ring_provider::default_provider();
        let ours = provider();
        let names = |p: &CryptoProvider| p.cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&ring), "the same suites in the same order");
        for suite in &ours.cipher_suites {
            match suite {
                SupportedCipherSuite::Tls13(suite) => assert!(
                    suites().iter().any(|ours| std::ptr::eq(ours, *suite)),
                    "{:?} keeps ring's record keys",
                    suite.common.suite
                ),
                SupportedCipherSuite::Tls12(_) => {}
            }
        }
        assert_eq!(ours.kx_groups.len(), ring.kx_groups.len());
    }

    #[test]
    fn extracted_secrets_name_the_suites_algorithm() {
        let names = [&AES_128_GCM, &AES_256_GCM, &CHACHA20_POLY1305].map(|alg| {
            let (k, iv) = key(1);
            match alg.extract_keys(k, iv).unwrap() {
                ConnectionTrafficSecrets::Aes128Gcm { .. } => "aes128",
                ConnectionTrafficSecrets::Aes256Gcm { .. } => "aes256",
                ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => "chacha",
                _ => "other",
            }
        });
        assert_eq!(names, ["aes128", "aes256", "chacha"]);
        assert_eq!([AES_128_GCM.key_len(), AES_256_GCM.key_len(), CHACHA20_POLY1305.key_len()], [16, 32, 32]);
    }
}
