//! A long history written by the pool API and judged by upstream's tools:
//! thin devices, snapshots of snapshots, deletes, range removes, a held
//! metadata root, data device growth, hundreds of commits. At checkpoints
//! the disk must equal the model, `thin_check` and pdata-check must pass
//! with no leaked block, and `thin_dump -m` must read the held root.

mod common;

use common::model::{Harness, Op};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
    }
}

#[test]
fn long_history_passes_thin_check_and_pdata_check() {
    let mut h = Harness::new(4096, 20_000);
    // The model is checked at checkpoints, not after every commit.
    h.deep = false;
    let mut rng = Rng(0x5eed_1234_abcd);
    h.apply(&Op::CreateThin(0));
    let mut next_dev = 1;
    let mut checkpoints = 0;
    while h.commits < 300 {
        let live: Vec<u64> = h.cur.devs.keys().copied().collect();
        let dev = live
            .get(rng.below(live.len().max(1) as u64) as usize)
            .copied()
            .unwrap_or(0);
        let op = match rng.below(100) {
            0..=39 => Op::Map(dev, rng.below(5000), 1 + rng.below(200), 1 + rng.below(3)),
            40..=47 => Op::RemoveRange(dev, rng.below(5000), rng.below(800)),
            48..=51 => Op::Unmap(dev, rng.below(5000)),
            // Snapshots of whatever exists: snapshots of snapshots too.
            52..=57 if live.len() < 12 => {
                next_dev += 1;
                Op::CreateSnap(next_dev, dev)
            }
            58..=60 if live.len() < 12 => {
                next_dev += 1;
                Op::CreateThin(next_dev)
            }
            61..=63 if live.len() > 2 => Op::Delete(dev),
            64..=65 => Op::Reserve,
            66 => Op::Release,
            67 => Op::BumpTransactionId,
            68 if h.nr_data < 40_000 => Op::GrowData(1 + rng.below(3000)),
            69 => Op::Abort,
            _ => Op::Commit,
        };
        h.apply(&op);
        if h.commits >= (checkpoints + 1) * 50 {
            checkpoints += 1;
            h.check_disk();
            h.check_pool();
            h.check_tools();
        }
    }
    let mapped: usize = h.cur.devs.values().map(|d| d.map.len()).sum();
    assert!(
        h.cur.devs.len() >= 3 && mapped > 10_000,
        "a thin history: {} devices, {mapped} mappings",
        h.cur.devs.len()
    );
    h.finish();
}
