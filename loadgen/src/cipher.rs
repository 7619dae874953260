//! The crypto floor (`crypto-floor`): what AES-128-GCM alone costs per byte on one thread, with
//! ring, on TLS-sized records. A relay that terminates TLS decrypts every byte the client sends
//! (open) and encrypts every byte it sends back (seal), so `seal + open` per byte is the least a
//! TLS relay's CPU per byte "each way" (one byte up, its echo down) can be, before any socket work.
//! The gateway prefers `TLS13_AES_128_GCM_SHA256`; rustls with the ring provider runs this cipher.
//! `--cipher aes256` measures AES-256-GCM instead: what a server that follows the client's order
//! pays with rustls clients, which list it first (the load generator's client does).
//!
//! Each record is sealed in place (`seal_in_place_separate_tag`, the 5-byte TLS record header as
//! additional data, a fresh nonce from a sequence number, as TLS 1.3 makes them) and then opened
//! in place (`open_in_place`, tag checked), on one buffer that stays in cache, as a relay's
//! record buffer does. Each call is timed with the monotonic clock (about 20 ns against some
//! microseconds per 16 KiB record); the thread's CPU time over the run is reported beside the wall
//! time, so a run that was preempted shows (`cpu_share` below 1).

use crate::cli::{CryptoFloorArgs, FloorCipher};
use crate::Outcome;
use anyhow::anyhow;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use std::time::{Duration, Instant};

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Totals {
    records: u64,
    seal: Duration,
    open: Duration,
}

/// Seals and opens `record` bytes per record until `run_for` has passed.
fn measure(
    key: &LessSafeKey,
    iv: &[u8; NONCE_LEN],
    buf: &mut [u8],
    record: usize,
    run_for: Duration,
) -> anyhow::Result<Totals> {
    let len = record + key.algorithm().tag_len();
    // TLS 1.3 record header of an application-data record of this length.
    let aad = [0x17, 0x03, 0x03, (len >> 8) as u8, len as u8];
    let mut t = Totals {
        records: 0,
        seal: Duration::ZERO,
        open: Duration::ZERO,
    };
    let start = Instant::now();
    while start.elapsed() < run_for {
        let mut nonce = *iv;
        for (n, s) in nonce[NONCE_LEN - 8..].iter_mut().zip(t.records.to_be_bytes()) {
            *n ^= s;
        }
        let t0 = Instant::now();
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf[..record])
            .map_err(|_| anyhow!("seal failed"))?;
        let t1 = Instant::now();
        buf[record..len].copy_from_slice(tag.as_ref());
        let t2 = Instant::now();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf[..len])
            .map_err(|_| anyhow!("open failed: the record did not authenticate"))?;
        let t3 = Instant::now();
        std::hint::black_box(plain);
        t.seal += t1 - t0;
        t.open += t3 - t2;
        t.records += 1;
    }
    Ok(t)
}

pub fn run(args: &CryptoFloorArgs) -> anyhow::Result<Outcome> {
    let rng = SystemRandom::new();
    let (algorithm, name) = match args.cipher {
        FloorCipher::Aes128 => (&AES_128_GCM, "AES-128-GCM"),
        FloorCipher::Aes256 => (&AES_256_GCM, "AES-256-GCM"),
    };
    let mut key_bytes = vec![0u8; algorithm.key_len()];
    let mut iv = [0u8; NONCE_LEN];
    rng.fill(&mut key_bytes).map_err(|_| anyhow!("no random numbers"))?;
    rng.fill(&mut iv).map_err(|_| anyhow!("no random numbers"))?;
    let key = LessSafeKey::new(UnboundKey::new(algorithm, &key_bytes).map_err(|_| anyhow!("bad AES key"))?);
    let record = args.record_size;
    let mut buf: Vec<u8> = (0..record + algorithm.tag_len()).map(|i| i as u8).collect();

    // Warm up (CPU frequency, caches, the key schedule's first use), then measure.
    measure(&key, &iv, &mut buf, record, Duration::from_millis(200))?;
    let duration: Duration = args.duration.into();
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    let t = measure(&key, &iv, &mut buf, record, duration)?;
    let (wall, cpu) = (wall0.elapsed(), thread_cpu().saturating_sub(cpu0));

    let bytes = t.records as f64 * record as f64;
    let per_byte = |d: Duration| d.as_nanos() as f64 / bytes;
    let (seal, open) = (per_byte(t.seal), per_byte(t.open));
    let cpu_share = cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let json = json!({
        "scenario": "crypto-floor",
        "cipher": name,
        "implementation": "ring, seal_in_place_separate_tag + open_in_place",
        "record_bytes": record,
        "records": t.records,
        "duration_s": wall.as_secs_f64(),
        "seal_ns_per_byte": seal,
        "open_ns_per_byte": open,
        "both_ways_ns_per_byte": seal + open,
        "seal_gb_s": 1.0 / seal,
        "open_gb_s": 1.0 / open,
        "seal_ns_per_record": t.seal.as_nanos() as f64 / t.records as f64,
        "open_ns_per_record": t.open.as_nanos() as f64 / t.records as f64,
        "thread_cpu_s": cpu.as_secs_f64(),
        "cpu_share": cpu_share,
    });
    let summary = format!(
        "crypto floor: {name}, {record}-byte records, 1 thread: seal {seal:.3} ns/B ({:.2} GB/s), open {open:.3} ns/B ({:.2} GB/s), both ways {:.3} ns/B ({} records in {:.1} s, CPU share {cpu_share:.2})",
        1.0 / seal,
        1.0 / open,
        seal + open,
        t.records,
        wall.as_secs_f64()
    );
    Ok(Outcome { json, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).unwrap());
        let mut buf = vec![1u8; 1024 + 16];
        let t = measure(&key, &[0; NONCE_LEN], &mut buf, 1024, Duration::from_millis(20)).unwrap();
        assert!(t.records > 0);
        assert!(buf[..1024].iter().all(|&b| b == 1), "open gives back the plaintext");
    }
}
