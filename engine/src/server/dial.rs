//! Connecting to a target: its configured address, resolved at connect time (on the DNS pool,
//! never on a relaying core), every address tried in turn within one connect timeout.

use super::timeout;
use crate::blocking::Pools;
use glommio::net::TcpStream;
use portcullis_core::config::Target;
use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub async fn dial(target: &Target, limit: Duration, pools: &Pools) -> std::io::Result<TcpStream> {
    let started = Instant::now();
    let deadline = started + limit;
    let addrs: Vec<SocketAddr> = match target.address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => {
            let name = target.address.clone();
            let lookup = pools
                .dns
                .run(move || std::net::ToSocketAddrs::to_socket_addrs(&name).map(|a| a.collect::<Vec<_>>()))
                .map_err(|e| Error::new(ErrorKind::WouldBlock, e.to_string()))?;
            match timeout(limit, lookup).await {
                None => return Err(Error::new(ErrorKind::TimedOut, "name resolution timed out")),
                Some(Err(e)) => return Err(Error::other(e.to_string())),
                Some(Ok(result)) => result?,
            }
        }
    };
    let mut last = Error::new(ErrorKind::NotFound, "no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, TcpStream::connect(addr)).await {
            Some(Ok(s)) => {
                let _ = s.set_nodelay(true);
                crate::metrics::with(|m| m.connect_latency.observe(started.elapsed()));
                return Ok(s);
            }
            Some(Err(e)) => last = Error::other(e.to_string()),
            None => return Err(Error::new(ErrorKind::TimedOut, "connect timed out")),
        }
    }
    Err(last)
}
