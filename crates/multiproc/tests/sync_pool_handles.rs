//! Locks, shared values and shared memory passed to pool tasks refer to the
//! same objects in the workers (DESIGN.md decision 4: handles are arguments).

mod sync_support;

use multiproc::{Array, Barrier, Lock, Pool, RawValue, SharedMemory, Value};
use sync_support::LONG;

fn add_under_lock(lock: Lock, total: RawValue<u64>, n: u32) -> u32 {
    for _ in 0..n {
        let _g = lock.acquire().unwrap();
        total.set(total.get() + 1);
    }
    n
}

fn fill(cells: Array<u32>, counter: Value<u64>, shm: SharedMemory, i: usize) -> usize {
    cells.set(i, i as u32 * 10);
    *counter.lock().unwrap() += 1;
    shm.write_at(i, &[i as u8 + 1]).unwrap();
    i
}

fn meet(b: Barrier) -> usize {
    b.wait_timeout(LONG).unwrap()
}

#[test]
fn handles_passed_to_pool_tasks_are_the_same_objects() {
    let pool = Pool::new(2).unwrap();
    let lock = Lock::new().unwrap();
    let total = RawValue::new(0u64).unwrap();
    let done: Vec<u32> = pool.starmap(add_under_lock, (0..8).map(|_| (lock.clone(), total.clone(), 500u32))).unwrap();
    assert_eq!(done, [500; 8]);
    assert_eq!(total.get(), 4000, "the lock excluded the workers from each other");

    let cells = Array::<u32>::zeroed(16).unwrap();
    let counter = Value::new(0u64).unwrap();
    let shm = SharedMemory::new(16).unwrap();
    let args: Vec<_> = (0..16).map(|i| (cells.clone(), counter.clone(), shm.clone(), i)).collect();
    assert_eq!(pool.starmap(fill, args).unwrap(), (0..16).collect::<Vec<_>>());
    assert_eq!(cells.to_vec(), (0..16).map(|i| i * 10).collect::<Vec<u32>>());
    assert_eq!(counter.get(), 16);
    let mut bytes = [0u8; 16];
    shm.read_at(0, &mut bytes).unwrap();
    assert_eq!(bytes.to_vec(), (1..=16).collect::<Vec<u8>>());

    // A worker and the parent meet at one barrier (one task: a worker may
    // queue several tasks, and two blocked on one worker would never meet).
    let b = Barrier::new(2).unwrap();
    let mut r = pool.apply_async(meet, (b.clone(),));
    let mut indices = vec![b.wait_timeout(LONG).unwrap(), r.get_timeout(LONG).unwrap()];
    indices.sort();
    assert_eq!(indices, [0, 1]);
}
