//! `loopback-floor`: what the kernel alone charges per delivery on this
//! machine, so the chat server's figures can be read against it.
//!
//! It opens `--connections` loopback TCP connections and, on one thread,
//! writes one `--bytes`-byte record per connection per round (like a
//! fan-out of one message to every member: one `write` per delivery);
//! another thread reads everything. `--coalesce K` puts K deliveries in
//! each write, as a server that batches a connection's queued frames
//! would. Prints one JSON object: the writing thread's CPU (user and
//! system) per delivery — the server's side; on loopback it includes the
//! kernel's receive processing, as a server's CPU does in the benchmark —
//! the reading thread's, and deliveries per second. No HTTP/2, no gRPC, no
//! runtime: a floor.

#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

struct Args {
    connections: usize,
    rounds: usize,
    bytes: usize,
    coalesce: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        connections: 1000,
        rounds: 300,
        bytes: 128,
        coalesce: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--connections" => a.connections = n,
            "--rounds" => a.rounds = n,
            "--bytes" => a.bytes = n,
            "--coalesce" => a.coalesce = n,
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--connections, --rounds, --bytes, --coalesce)"
                ));
            }
        }
    }
    if a.connections == 0 || a.rounds == 0 || a.bytes == 0 || a.coalesce == 0 {
        return Err("every value must be at least 1".into());
    }
    Ok(a)
}

/// The calling thread's (user, system) CPU seconds.
fn thread_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tck = chat_bench::procstat::clk_tck();
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tck;
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    (at(11), at(12))
}

/// Reads every connection until each has `expected` bytes; returns the
/// thread's CPU seconds spent.
fn read_all(mut readers: Vec<TcpStream>, expected: u64) -> std::io::Result<(f64, f64)> {
    let (u0, s0) = thread_cpu();
    let mut sink = vec![0u8; 1 << 16];
    let mut received = vec![0u64; readers.len()];
    let mut left = readers.len();
    while left > 0 {
        let mut progress = false;
        for (r, got) in readers.iter_mut().zip(received.iter_mut()) {
            if *got >= expected {
                continue;
            }
            match r.read(&mut sink) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    *got += n as u64;
                    progress = true;
                    if *got >= expected {
                        left -= 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if !progress {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    let (u1, s1) = thread_cpu();
    Ok((u1 - u0, s1 - s0))
}

fn run(a: &Args) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::with_capacity(a.connections);
    let mut writers = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let reader = TcpStream::connect(addr)?;
        reader.set_nonblocking(true)?;
        readers.push(reader);
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        writers.push(writer);
    }
    let record = vec![b'x'; a.bytes * a.coalesce];
    let expected = (a.rounds * record.len()) as u64;
    let reader = std::thread::spawn(move || read_all(readers, expected));

    let (u0, s0) = thread_cpu();
    let start = Instant::now();
    for _ in 0..a.rounds {
        for w in &mut writers {
            w.write_all(&record)?;
        }
    }
    let (u1, s1) = thread_cpu();
    let (read_user, read_sys) = reader
        .join()
        .map_err(|_| std::io::Error::other("the reading thread panicked"))??;
    let wall = start.elapsed().as_secs_f64();
    let deliveries = (a.rounds * a.connections * a.coalesce) as f64;
    let writes = (a.rounds * a.connections) as f64;
    Ok(format!(
        "{{\"connections\":{},\"bytes\":{},\"coalesce\":{},\"writes\":{},\"deliveries\":{},\
         \"wall_s\":{:.3},\"deliveries_per_s\":{:.0},\"writer_user_us_per_delivery\":{:.3},\
         \"writer_sys_us_per_delivery\":{:.3},\"writer_cpu_us_per_delivery\":{:.3},\
         \"reader_cpu_us_per_delivery\":{:.3}}}",
        a.connections,
        a.bytes,
        a.coalesce,
        writes,
        deliveries,
        wall,
        deliveries / wall,
        (u1 - u0) / deliveries * 1e6,
        (s1 - s0) / deliveries * 1e6,
        ((u1 - u0) + (s1 - s0)) / deliveries * 1e6,
        (read_user + read_sys) / deliveries * 1e6,
    ))
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loopback-floor: {e}");
            std::process::exit(64);
        }
    };
    match run(&args) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("loopback-floor: {e}");
            std::process::exit(2);
        }
    }
}
