use super::*;
use crate::store::StoreErrorKind;
use proptest::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
    attrs: BTreeMap<String, i64>,
}

fn profile(i: u64) -> Profile {
    Profile {
        id: i,
        name: format!("user-{i}"),
        tags: (0..(i % 7)).map(|t| format!("tag{t}")).collect(),
        score: if i.is_multiple_of(2) {
            Some(i as f64 / 3.0)
        } else {
            None
        },
        attrs: (0..(i % 5))
            .map(|a| (format!("attr{a}"), a as i64 - 2))
            .collect(),
    }
}

#[test]
fn value_round_trip_with_and_without_deadline() {
    let c = PostcardCodec::new();
    for i in 0..50 {
        let p = profile(i);
        let bytes = c.encode_value(&p, None).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let s: Stored<Profile> = c.decode_value(&bytes).unwrap();
        assert_eq!(
            s,
            Stored {
                value: p.clone(),
                expires_at: None
            }
        );

        let t = UNIX_EPOCH + Duration::new(1_700_000_000 + i, 123_456_789);
        let bytes = c.encode_value(&p, Some(t)).unwrap();
        assert_eq!(peek_deadline(&bytes).unwrap(), Some(t));
        let s: Stored<Profile> = c.decode_value(&bytes).unwrap();
        assert_eq!(
            s,
            Stored {
                value: p,
                expires_at: Some(t)
            }
        );
    }
}

#[test]
fn deadline_before_epoch_is_clamped_to_epoch() {
    let c = PostcardCodec::new();
    let t = UNIX_EPOCH - Duration::from_secs(5);
    let s: Stored<u8> = c
        .decode_value(&c.encode_value(&7u8, Some(t)).unwrap())
        .unwrap();
    assert_eq!(s.expires_at, Some(UNIX_EPOCH));
}

#[test]
fn key_round_trip_is_deterministic() {
    let c = PostcardCodec::new();
    let k = ("tenant".to_string(), 42u64);
    let a = c.encode_key(&k).unwrap();
    assert_eq!(a, c.encode_key(&k).unwrap());
    assert_eq!(c.decode_key::<(String, u64)>(&a).unwrap(), k);
    let mut long = a.clone();
    long.push(0);
    assert_eq!(
        c.decode_key::<(String, u64)>(&long).unwrap_err().kind(),
        StoreErrorKind::Fail
    );
}

#[test]
fn version_mismatch_is_reported_clearly() {
    let c = PostcardCodec::new();
    let mut bytes = c.encode_value(&1u32, None).unwrap();
    bytes[0] = 2;
    let e = c.decode_value::<u32>(&bytes).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Fail);
    assert!(e.message().contains("format version 2"), "{e}");
}

#[test]
fn truncated_and_trailing_bytes_are_errors() {
    let c = PostcardCodec::new();
    let t = UNIX_EPOCH + Duration::from_secs(1);
    let bytes = c.encode_value(&profile(6), Some(t)).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            c.decode_value::<Profile>(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    let e = c.decode_value::<Profile>(&long).unwrap_err();
    assert!(e.message().contains("trailing"), "{e}");
}

#[cfg(feature = "compression")]
#[test]
fn compressed_round_trip_and_small_values_stay_plain() {
    let c = PostcardCodec::compressed(64);
    let big: Vec<String> = (0..100)
        .map(|i| format!("{{\"id\":{i},\"role\":\"admin\"}}"))
        .collect();
    let bytes = c.encode_value(&big, None).unwrap();
    assert_eq!(bytes[1] & FLAG_COMPRESSED, FLAG_COMPRESSED);
    let plain = PostcardCodec::new().encode_value(&big, None).unwrap();
    assert!(
        bytes.len() < plain.len() / 2,
        "{} vs {}",
        bytes.len(),
        plain.len()
    );
    // Any codec reads it back.
    assert_eq!(
        PostcardCodec::new()
            .decode_value::<Vec<String>>(&bytes)
            .unwrap()
            .value,
        big
    );
    let small = c.encode_value(&5u8, None).unwrap();
    assert_eq!(small[1] & FLAG_COMPRESSED, 0);
}

#[cfg(feature = "compression")]
#[test]
fn lying_length_prefix_is_refused_without_allocating() {
    let mut bytes = vec![FORMAT_VERSION, FLAG_COMPRESSED];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0x10, 0x20]);
    let e = PostcardCodec::new()
        .decode_value::<Vec<u8>>(&bytes)
        .unwrap_err();
    assert!(e.message().contains("claims"), "{e}");
}

#[cfg(not(feature = "compression"))]
#[test]
fn compressed_record_without_the_feature_says_so() {
    let bytes = [FORMAT_VERSION, FLAG_COMPRESSED, 1, 0, 0, 0, 0];
    let e = PostcardCodec::new().decode_value::<u8>(&bytes).unwrap_err();
    assert!(e.message().contains("`compression` feature"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes never panic, whatever type they are decoded as.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let c = PostcardCodec::new();
        let _ = c.decode_value::<Profile>(&bytes);
        let _ = c.decode_value::<String>(&bytes);
        let _ = c.decode_value::<Vec<u64>>(&bytes);
        let _ = c.decode_key::<(String, u32)>(&bytes);
        let _ = peek_deadline(&bytes);
    }

    /// Valid headers with random bodies (the interesting case for the body decoder).
    #[test]
    fn random_bodies_never_panic(flags in 0u8..4, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = vec![FORMAT_VERSION, flags];
        bytes.extend_from_slice(&body);
        let c = PostcardCodec::new();
        let _ = c.decode_value::<Profile>(&bytes);
        let _ = c.decode_value::<BTreeMap<String, Vec<u8>>>(&bytes);
    }

    /// Every single-byte corruption of a valid record is either an error or decodes to
    /// some value; it never panics.
    #[test]
    fn flipped_bytes_never_panic(i in 0u64..64, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let c = PostcardCodec::new();
        let mut bytes = c.encode_value(&profile(i), Some(UNIX_EPOCH)).unwrap();
        let p = pos.index(bytes.len());
        bytes[p] ^= 1 << bit;
        let _ = c.decode_value::<Profile>(&bytes);
    }
}
