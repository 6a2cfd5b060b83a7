//! Health checks of a running instance: does each service of its role
//! greet on the store's IP, as this slot (its `servername`)?

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// The most of a greeting read (IMAP capability lines come first).
const MAX_GREETING: usize = 4096;

/// Connects to `addr` and reads its greeting until a line that starts with
/// `greeting` (`* OK`, `220 `) and names `servername`, within `within`.
pub async fn banner(addr: SocketAddr, greeting: &str, servername: &str, within: Duration) -> Result<(), String> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(verdict) = judge(&got, greeting, servername) {
                return verdict;
            }
            if got.len() > MAX_GREETING {
                return Err(format!("no {greeting:?} line in the first {MAX_GREETING} bytes"));
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(result) => result,
        Err(_) => Err(format!("no greeting within {within:?}")),
    }
}

/// The verdict on the complete lines of `got`, if one decides it: the
/// first line that starts with `greeting` (or, for IMAP, `* BYE`).
fn judge(got: &[u8], greeting: &str, servername: &str) -> Option<Result<(), String>> {
    let text = String::from_utf8_lossy(got);
    let complete = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
    for line in complete.lines().map(str::trim_end) {
        if line.starts_with(greeting) {
            return Some(if line.split_whitespace().any(|w| w == servername) {
                Ok(())
            } else {
                Err(format!("greets as another instance: {line:?}"))
            });
        }
        if line.starts_with("* BYE") || line.starts_with("421 ") {
            return Some(Err(format!("refuses: {line:?}")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn greetings_are_judged_on_complete_lines() {
        let imap = b"* OK [CAPABILITY IMAP4rev1] s01.imap1 Cyrus IMAP 3.6.1 server ready\r\n";
        assert_eq!(judge(imap, "* OK", "s01.imap1"), Some(Ok(())));
        assert!(matches!(judge(imap, "* OK", "s01.imap2"), Some(Err(e)) if e.contains("another instance")));
        assert_eq!(judge(&imap[..20], "* OK", "s01.imap1"), None, "half a line waits");
        let sync = b"* SASL PLAIN\r\n* STARTTLS\r\n* OK s01.imap2 Cyrus sync server 3.6.1\r\n";
        assert_eq!(judge(sync, "* OK", "s01.imap2"), Some(Ok(())), "capability lines first");
        let lmtp = b"220 s01.imap1 LMTP Cyrus 3.6.1 ready\r\n";
        assert_eq!(judge(lmtp, "220 ", "s01.imap1"), Some(Ok(())));
        assert!(matches!(judge(b"* BYE shutting down\r\n", "* OK", "x"), Some(Err(_))));
        assert!(matches!(judge(b"421 busy\r\n", "220 ", "x"), Some(Err(_))));
    }
}
