//! Windows console output as UTF-8. qemu-ga hands back a Windows program's bytes as it
//! wrote them: in the console's OEM code page (437, 850, 936...), not UTF-8. Commands run
//! through `cmd.exe` (a shell command line) are prefixed with `chcp 65001` so that `cmd`
//! and most console programs write UTF-8; what still arrives as invalid UTF-8 is decoded
//! from the guest's OEM code page, read once per agent from the registry
//! (`reg query ...\Nls\CodePage /v OEMCP`). Argv execs of other programs are left as
//! they are: their output may be binary.
//!
//! No Windows guest runs in CI: the tests below use replies in qemu-ga's shape written
//! from known code-page bytes (`tests/fixtures/windows`).

use encoding_rs::Encoding;

use super::{AgentClient, GuestExecCommand, QgaError};
use crate::sync::lock;

/// What a Windows shell command line is prefixed with: output in UTF-8 (code page
/// 65001). `&`, not `&&`: where `chcp` cannot switch (no console), the command still runs.
pub(crate) const UTF8_PREFIX: &str = "chcp 65001 >nul 2>&1 & ";

/// `reg.exe` arguments that print the OEM code page.
const OEMCP_QUERY: [&str; 4] = [
    "query",
    r"HKLM\SYSTEM\CurrentControlSet\Control\Nls\CodePage",
    "/v",
    "OEMCP",
];

/// Bytes 0x80..=0xFF of code page 437 (US English), which encoding_rs does not have.
const CP437_HIGH: [&str; 8] = [
    "ÇüéâäàåçêëèïîìÄÅ",
    "ÉæÆôöòûùÿÖÜ¢£¥₧ƒ",
    "áíóúñÑªº¿⌐¬½¼¡«»",
    "░▒▓│┤╡╢╖╕╣║╗╝╜╛┐",
    "└┴┬├─┼╞╟╚╔╩╦╠═╬╧",
    "╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀",
    "αßΓπΣσµτΦΘΩδ∞φε∩",
    "≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}",
];

/// Bytes 0x80..=0xFF of code page 850 (Western Europe), which encoding_rs does not have.
const CP850_HIGH: [&str; 8] = [
    "ÇüéâäàåçêëèïîìÄÅ",
    "ÉæÆôöòûùÿÖÜø£Ø×ƒ",
    "áíóúñÑªº¿®¬½¼¡«»",
    "░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐",
    "└┴┬├─┼ãÃ╚╔╩╦╠═╬¤",
    "ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀",
    "ÓßÔÒõÕµþÞÚÛÙýÝ¯´",
    "\u{ad}±‗¾¶§÷¸°¨·¹³²■\u{a0}",
];

/// Whether `path` is Windows' command interpreter.
pub(crate) fn is_cmd(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    let name = p.rsplit(['\\', '/']).next().unwrap_or(&p);
    name == "cmd.exe" || name == "cmd"
}

/// `bytes` as UTF-8: unchanged when they already are; else decoded from `code_page`
/// (unchanged when that code page is unknown here).
pub fn to_utf8(bytes: Vec<u8>, code_page: u16) -> Vec<u8> {
    if std::str::from_utf8(&bytes).is_ok() {
        return bytes;
    }
    let table = match code_page {
        437 => Some(&CP437_HIGH),
        850 => Some(&CP850_HIGH),
        _ => None,
    };
    if let Some(t) = table {
        let high: Vec<char> = t.iter().flat_map(|s| s.chars()).collect();
        return bytes
            .iter()
            .map(|&b| {
                if b < 0x80 {
                    char::from(b)
                } else {
                    high[usize::from(b - 0x80)]
                }
            })
            .collect::<String>()
            .into_bytes();
    }
    match encoding(code_page) {
        Some(enc) => enc
            .decode_without_bom_handling(&bytes)
            .0
            .into_owned()
            .into_bytes(),
        None => bytes,
    }
}

/// The encoding_rs encoding of a Windows code page, where it has one.
fn encoding(code_page: u16) -> Option<&'static Encoding> {
    use encoding_rs as e;
    Some(match code_page {
        866 => e::IBM866,
        874 => e::WINDOWS_874,
        932 => e::SHIFT_JIS,
        936 => e::GBK,
        949 => e::EUC_KR,
        950 => e::BIG5,
        1250 => e::WINDOWS_1250,
        1251 => e::WINDOWS_1251,
        1252 => e::WINDOWS_1252,
        1253 => e::WINDOWS_1253,
        1254 => e::WINDOWS_1254,
        1255 => e::WINDOWS_1255,
        1256 => e::WINDOWS_1256,
        1257 => e::WINDOWS_1257,
        1258 => e::WINDOWS_1258,
        20866 => e::KOI8_R,
        54936 => e::GB18030,
        _ => return None,
    })
}

/// The code page in `reg query ... /v OEMCP` output (`    OEMCP    REG_SZ    437`).
pub fn parse_oemcp(output: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(output)
        .lines()
        .find(|l| l.contains("OEMCP") && l.contains("REG_SZ"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

impl AgentClient {
    /// The Windows guest's OEM code page, read once from its registry and kept for the
    /// connection.
    pub async fn windows_oem_code_page(&self) -> Result<u16, QgaError> {
        if let Some(cp) = *lock(&self.state().oem_code_page) {
            return Ok(cp);
        }
        let cmd = GuestExecCommand::simple(
            "reg.exe",
            OEMCP_QUERY.iter().map(|a| (*a).to_owned()).collect(),
        );
        let r = self
            .exec_and_wait(&cmd, std::time::Duration::from_millis(50))
            .await?;
        let cp = parse_oemcp(&r.stdout).ok_or_else(|| QgaError::Agent {
            command: "reg.exe query OEMCP".into(),
            class: "Unsupported".into(),
            desc: "no OEMCP value in the guest's registry".into(),
        })?;
        *lock(&self.state().oem_code_page) = Some(cp);
        Ok(cp)
    }

    /// Console output of a Windows shell command as UTF-8 (see the module docs); the bytes
    /// as they are when the code page cannot be learnt.
    pub(crate) async fn windows_text(&self, bytes: Vec<u8>) -> Vec<u8> {
        if std::str::from_utf8(&bytes).is_ok() {
            return bytes;
        }
        match self.windows_oem_code_page().await {
            Ok(cp) => to_utf8(bytes, cp),
            Err(e) => {
                tracing::debug!(error = %e, "guest code page unknown; output left as is");
                bytes
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qga::commands::{ExecStatus, OsInfo};

    /// The `return` member of a fixture reply.
    fn reply<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!(
            "{}/tests/fixtures/windows/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::from_value(v["return"].clone()).unwrap()
    }

    #[test]
    fn a_windows_shell_command_line_asks_for_utf8() {
        let os: OsInfo = reply("osinfo-server2022");
        assert!(os.is_windows());
        let cmd = GuestExecCommand::shell(&os, "dir C:\\Users");
        assert!(is_cmd(&cmd.path));
        assert_eq!(cmd.args, ["/c", "chcp 65001 >nul 2>&1 & dir C:\\Users"]);
        assert!(is_cmd("C:\\Windows\\System32\\CMD.EXE") && !is_cmd("cmdx.exe"));
    }

    #[test]
    fn cp437_output_becomes_utf8() {
        let st: ExecStatus = reply("exec-status-dir-cp437");
        let reg: ExecStatus = reply("exec-status-reg-oemcp-437");
        let cp = parse_oemcp(&reg.stdout()).unwrap();
        assert_eq!(cp, 437);
        assert!(
            std::str::from_utf8(&st.stdout()).is_err(),
            "the fixture is CP437"
        );
        let out = String::from_utf8(to_utf8(st.stdout(), cp)).unwrap();
        assert_eq!(
            out,
            " Volume in drive C is System\r\n Directory of C:\\Users\\J\u{fc}rgen\\Dokumente\r\n"
        );
        let err = String::from_utf8(to_utf8(st.stderr(), cp)).unwrap();
        assert_eq!(err, "File Not Found: gr\u{fc}\u{df}e.txt\r\n");
    }

    #[test]
    fn cp936_output_becomes_utf8() {
        let st: ExecStatus = reply("exec-status-dir-cp936");
        let reg: ExecStatus = reply("exec-status-reg-oemcp-936");
        let cp = parse_oemcp(&reg.stdout()).unwrap();
        assert_eq!(cp, 936);
        let out = String::from_utf8(to_utf8(st.stdout(), cp)).unwrap();
        assert_eq!(
            out,
            " \u{9a71}\u{52a8}\u{5668} C \u{4e2d}\u{7684}\u{5377}\u{662f} System\r\n C:\\Users\\\u{5f20}\u{4e09} \u{7684}\u{76ee}\u{5f55}\r\n"
        );
    }

    #[test]
    fn utf8_and_unknown_code_pages_are_left_as_they_are() {
        let utf8 = "gr\u{fc}\u{df}e".as_bytes().to_vec();
        assert_eq!(to_utf8(utf8.clone(), 437), utf8);
        assert_eq!(to_utf8(vec![0x81, 0xe1], 12345), vec![0x81, 0xe1]);
        assert_eq!(to_utf8(vec![0x81, 0xe1], 850), "\u{fc}\u{df}".as_bytes());
        assert_eq!(parse_oemcp(b"ERROR: The system was unable to find"), None);
        let total: usize = CP437_HIGH
            .iter()
            .chain(&CP850_HIGH)
            .map(|s| s.chars().count())
            .sum();
        assert_eq!(total, 256);
    }
}
