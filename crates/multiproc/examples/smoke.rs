use multiproc::{Process, StartMethod};
use std::time::Instant;

fn add(a: u64, b: u64) -> u64 {
    a + b
}
fn boom() {
    panic!("kaboom")
}
fn quit() {
    std::process::exit(3)
}

fn main() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer, StartMethod::Fork] {
        let t = Instant::now();
        let mut p = Process::builder().start_method(m).spawn(add, (2u64, 3u64)).unwrap();
        println!("{m:?}: {:?} in {:?} exit {:?}", p.join(), t.elapsed(), p.exitcode());
        let t = Instant::now();
        for _ in 0..100 {
            let mut p = Process::builder().start_method(m).spawn(add, (2u64, 3u64)).unwrap();
            p.join().unwrap();
        }
        println!("  100 cycles: {:?}/each", t.elapsed() / 100);
        let mut p = Process::builder().start_method(m).spawn(boom, ()).unwrap();
        println!("  panic: {:?} exit {:?}", p.join().map_err(|e| e.to_string()), p.exitcode());
        let mut p = Process::builder().start_method(m).spawn(quit, ()).unwrap();
        println!("  exit: {:?} exit {:?}", p.join().map_err(|e| e.to_string()), p.exitcode());
    }
}
