//! A plain static file server over a directory, standing in for nginx or Home Assistant's
//! `www/` in front of `mpfleet export`: GET of a file answers its bytes with Content-Length,
//! anything else 404. No reports (a static server has none).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

pub struct StaticFiles {
    pub base: String,
}

impl StaticFiles {
    pub fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let root = root.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("/");
                    let safe = !path.split('/').any(|c| c == "..");
                    let file = root.join(path.trim_start_matches('/'));
                    let reply = match std::fs::read(&file) {
                        Ok(body) if safe && first.starts_with("GET ") && file.is_file() => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(&body);
                            r
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = conn.write_all(&reply);
                });
            }
        });
        Self { base }
    }
}
