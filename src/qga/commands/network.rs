//! `guest-network-get-interfaces`: the guest's network interfaces, MAC and IP addresses,
//! as the guest sees them (no guest network access needed).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::qga::Command;

/// `guest-network-get-interfaces`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestNetworkGetInterfaces;

/// One network interface of the guest.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkInterface {
    /// Interface name, e.g. `eth0` or `lo`.
    pub name: String,
    /// MAC address (`00:00:00:00:00:00` for `lo`); absent for interfaces without one.
    pub hardware_address: Option<String>,
    /// Assigned addresses; empty when the agent lists none.
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    /// Traffic counters (since 2.11).
    pub statistics: Option<NetworkInterfaceStats>,
}

impl NetworkInterface {
    /// Whether `addr` (e.g. `127.0.0.1`) is assigned to this interface.
    pub fn has_address(&self, addr: IpAddr) -> bool {
        self.ip_addresses.iter().any(|a| a.addr() == Some(addr))
    }
}

/// One address of an interface.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct IpAddress {
    /// The address, as text.
    pub ip_address: String,
    /// IPv4 or IPv6.
    pub ip_address_type: IpAddressType,
    /// Network prefix length, e.g. 24.
    pub prefix: i64,
}

impl IpAddress {
    /// The parsed address; `None` if the guest sent something unparsable (e.g. an IPv6
    /// address with a zone suffix).
    pub fn addr(&self) -> Option<IpAddr> {
        self.ip_address.parse().ok()
    }
}

/// The family of an [`IpAddress`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpAddressType {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// An interface's traffic counters since it came up.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkInterfaceStats {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bad packets received.
    pub rx_errs: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errs: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

impl Command for GuestNetworkGetInterfaces {
    const NAME: &'static str = "guest-network-get-interfaces";
    type Reply = Vec<NetworkInterface>;
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn decodes_interfaces_from_qemu_ga_7_2() {
        // A Debian 12 VM: loopback, two address-less ifb devices, one NIC.
        let ifs: Vec<NetworkInterface> = serde_json::from_str(
            r#"[{"name": "lo", "ip-addresses": [
                   {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                   {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}],
                 "statistics": {"tx-packets": 179, "tx-errs": 0, "rx-bytes": 27025,
                   "rx-dropped": 0, "rx-packets": 179, "rx-errs": 0, "tx-bytes": 27025,
                   "tx-dropped": 0},
                 "hardware-address": "00:00:00:00:00:00"},
                {"name": "ifb0", "hardware-address": "56:ae:cb:c2:db:f0"},
                {"name": "eth0", "ip-addresses": [
                   {"ip-address-type": "ipv4", "ip-address": "192.0.2.2", "prefix": 24},
                   {"ip-address-type": "ipv6", "ip-address": "fe80::fc:ff:fe00:1", "prefix": 64}],
                 "statistics": {"tx-packets": 2986, "tx-errs": 0, "rx-bytes": 208924512,
                   "rx-dropped": 0, "rx-packets": 5259, "rx-errs": 0, "tx-bytes": 266136,
                   "tx-dropped": 0},
                 "hardware-address": "02:fc:00:00:00:01"}]"#,
        )
        .unwrap();
        assert_eq!(ifs.len(), 3);
        let lo = &ifs[0];
        assert!(lo.has_address(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(lo.ip_addresses[1].ip_address_type, IpAddressType::Ipv6);
        assert_eq!(lo.ip_addresses[1].prefix, 128);
        assert_eq!(lo.statistics.unwrap().rx_bytes, 27025);
        assert!(ifs[1].ip_addresses.is_empty());
        assert_eq!(ifs[1].statistics, None);
        assert_eq!(ifs[2].statistics.unwrap().rx_bytes, 208_924_512);
        assert_eq!(
            ifs[2].hardware_address.as_deref(),
            Some("02:fc:00:00:00:01")
        );
    }

    #[test]
    fn tolerates_unknown_fields_and_odd_addresses() {
        let ifs: Vec<NetworkInterface> = serde_json::from_str(
            r#"[{"name": "Ethernet 2", "future": true, "ip-addresses": [
                   {"ip-address-type": "ipv6", "ip-address": "fe80::1%12", "prefix": 64}]}]"#,
        )
        .unwrap();
        assert_eq!(ifs[0].hardware_address, None);
        assert_eq!(ifs[0].ip_addresses[0].addr(), None);
    }
}
