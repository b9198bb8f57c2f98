//! Reading the daemon's Prometheus endpoint (`[metrics] listen`): what tests wait on when
//! the event they need is only visible there (a policy reload, for one).

use std::{
    io::{Read, Write},
    time::Duration,
};

/// One `GET /metrics` over a plain HTTP/1.0 connection.
pub fn scrape_once(port: u16) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// `GET /metrics`, retried until the exporter listens (bounded: 5 s).
pub async fn scrape(port: u16) -> String {
    for _ in 0..100 {
        if let Ok(body) = tokio::task::spawn_blocking(move || scrape_once(port))
            .await
            .unwrap()
            && body.starts_with("HTTP/1.")
        {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics endpoint on port {port} never answered");
}

/// The value of the sample named `name` whose labels include every `labels` entry.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let matches = (rest.is_empty() && labels.is_empty())
            || (rest.starts_with('{') && labels.iter().all(|want| rest.contains(want)));
        if matches { value.parse().ok() } else { None }
    })
}

/// A counter's current value, 0 while it has not been recorded (or the endpoint does
/// not answer yet).
pub fn counter(port: u16, name: &str, labels: &[&str]) -> f64 {
    scrape_once(port)
        .ok()
        .and_then(|body| sample(&body, name, labels))
        .unwrap_or(0.0)
}
