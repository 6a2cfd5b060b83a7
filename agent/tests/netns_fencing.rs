//! Fencing that cannot be outlived, with real processes in network
//! namespaces (root; never skips):
//! - a SIGSTOPped master's agent, one whose reconciler is stuck, or one
//!   whose kernel calls never answer when its lease runs out, is killed by
//!   the watchdog (the test plays systemd with the shipped unit's
//!   settings) and fenced: its master IPs leave its namespace well within
//!   lease + margin, sampled every 10 ms there are never two holders, and the
//!   stores are reachable on their new masters;
//! - `slotd fence` with the Raft data corrupt, the data directory gone, or
//!   the ledger gone too, still releases every address the node held;
//! - a removed store's IP is released, and a new store gets it: one holder,
//!   even when the old master was cut off and never heard of the removal.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::netns::{find_store, leader, masters, wait_for, Site, SiteOptions, Unkillable, HOSTS, WAIT};
use slotd_agent::config::Timing;
use slotd_netops::testkit::IFACE;

/// How a master's agent is made unable to fence by itself.
#[derive(Clone, Copy)]
enum Freeze {
    /// This signal (SIGSTOP; SIGUSR1 with fault injection: the reconciler
    /// blocks for 10 s).
    Signal(libc::c_int),
    /// SIGUSR2 with fault injection (every kernel call hangs from then on),
    /// then its switch port cut, so that its lease runs out and it must
    /// give up its addresses through a kernel that does not answer.
    KernelHangsThenCut,
    /// Frozen in a way SIGKILL cannot end (a cgroup-v1 freezer: as a thread
    /// stuck in the kernel), 20 masters on it, a fencer beside every agent:
    /// the watchdog's kill waits, `slotd fence` cannot run; the fencer must
    /// give the addresses up when the lease it was told runs out.
    CannotDie,
}

/// Freezes (or stalls) a master's agent and watches its master IPs, every
/// 10 ms, until they are served elsewhere: they must have left its
/// namespace before lease + margin (when the leader may move the stores).
fn frozen_master(tag: &str, freeze: Freeze) {
    let cannot_die = matches!(freeze, Freeze::CannotDie);
    let site = Site::start_with(
        tag,
        SiteOptions {
            service_manager: true,
            slots: if cannot_die { 40 } else { 4 },
            fencers: cannot_die,
            ..SiteOptions::default()
        },
    );
    let before = site.init();
    let lead = leader(&before);
    let victim = (0..3).find(|i| *i != lead).unwrap();
    let name = format!("imap{}", victim + 1);
    let moved: Vec<(String, IpAddr)> = masters(&before, &name);
    let ips: Vec<String> = moved.iter().map(|(_, ip)| format!("{ip}/32")).collect();
    assert!(!ips.is_empty());

    let (mut unkillable, mut fencer_said) = (None, 0);
    let frozen = match freeze {
        Freeze::CannotDie => {
            fencer_said = site.fencer_log(victim).len();
            let frozen = Instant::now();
            unkillable = Some(Unkillable::freeze(tag, site.pid(victim)));
            frozen
        }
        Freeze::Signal(signal) => {
            let frozen = Instant::now();
            site.signal(victim, signal);
            frozen
        }
        Freeze::KernelHangsThenCut => {
            site.signal(victim, libc::SIGUSR2);
            // The agent says so once the signal is handled: then cut.
            wait_for("the kernel calls to hang", WAIT, || {
                site.log(victim).contains("every kernel call hangs").then_some(())
            });
            let frozen = Instant::now();
            site.lan
                .switch()
                .ip(&["link", "set", &format!("p-{}", HOSTS[victim]), "down"]);
            frozen
        }
    };
    let mut gone = None;
    let deadline = frozen + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the IPs never moved");
        let held = site.held_all(&[]);
        for ip in &ips {
            let holders: Vec<usize> = (0..3).filter(|i| held[*i].contains(ip)).collect();
            assert!(holders.len() <= 1, "{ip} held by {holders:?} at once");
        }
        if gone.is_none() && !ips.iter().any(|ip| held[victim].contains(ip)) {
            gone = Some(frozen.elapsed());
        }
        let elsewhere = ips.iter().all(|ip| (0..3).any(|i| i != victim && held[i].contains(ip)));
        if gone.is_some() && elsewhere {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone = gone.unwrap();
    if let Some(unkillable) = unkillable {
        // The fencer did it: the agent has not exited, nothing ran `slotd
        // fence` yet.
        assert!(
            site.killed
                .lock()
                .map(|k| k.iter().all(|k| k.node != victim))
                .unwrap_or(false),
            "the frozen agent died"
        );
        let log = site.fencer_log(victim);
        let since = &log[fencer_said..];
        // Every moved master IP went by the fencer's hand (replica IPs,
        // from the ledger, go too: the agent binds them again later).
        for (_, ip) in &moved {
            let said = since
                .lines()
                .any(|l| l.contains("fencer: released") && l.contains(&format!("addr={ip}")));
            assert!(said, "the fencer did not release {ip}: {since}");
        }
        drop(unkillable);
    }
    let killed = wait_for("the watchdog to have killed and fenced the agent", WAIT, || {
        site.killed.lock().ok()?.iter().find(|k| k.node == victim).cloned()
    });
    assert!(
        killed.fence.status.success(),
        "fence: {}",
        String::from_utf8_lossy(&killed.fence.stderr)
    );
    eprintln!(
        "{tag}: killed {:?} after the freeze; IPs gone after {gone:?}; fence took {:?}",
        killed.killed - frozen,
        killed.fenced - killed.killed
    );
    let t = Timing::default();
    let lease_and_margin = t.lease() + t.clock_skew_margin();
    assert!(gone < lease_and_margin, "the master IPs stayed {gone:?}");
    // Reachable on their new masters.
    let survivor = (0..3).find(|i| *i != victim).unwrap();
    site.moved_served(survivor, &moved, &name);
}

#[test]
fn a_master_whose_agent_cannot_die_loses_its_ips_through_its_fencer_within_the_margin() {
    frozen_master("fzd", Freeze::CannotDie);
}

#[test]
fn a_sigstopped_master_is_killed_and_fenced_within_the_margin() {
    frozen_master("fzs", Freeze::Signal(libc::SIGSTOP));
}

#[test]
fn a_stalled_reconciler_is_killed_and_fenced_within_the_margin() {
    // SIGUSR1 (with SLOTD_INJECT_FAULTS=1): the reconciler blocks for 10 s.
    frozen_master("fzr", Freeze::Signal(libc::SIGUSR1));
}

#[test]
fn a_master_whose_kernel_stops_answering_is_killed_and_fenced_within_the_margin() {
    // SIGUSR2 (with SLOTD_INJECT_FAULTS=1): no kernel call answers; the
    // cut ends the lease, and the fence through that kernel never ends.
    frozen_master("fzk", Freeze::KernelHangsThenCut);
}

#[test]
fn fence_releases_the_ledger_without_the_raft_data() {
    let site = Site::start("fzl");
    site.init();
    let before = site.held_all(&[]);
    assert!(before.iter().all(|h| !h.is_empty()));
    // An address slotd does not manage, in the store ranges even, on every
    // machine: the fence must leave it.
    let unmanaged = |i: usize| format!("10.64.250.{}/32", i + 1);
    for (i, host) in HOSTS.iter().enumerate() {
        site.lan.host(host).ip(&["addr", "add", &unmanaged(i), "dev", IFACE]);
    }
    // Every agent dies (kill -9): the addresses stay bound.
    for i in 0..3 {
        site.kill9(i);
    }
    let with_unmanaged: Vec<Vec<String>> = (0..3)
        .map(|i| {
            let mut h = before[i].clone();
            h.push(unmanaged(i));
            h.sort();
            h
        })
        .collect();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        site.held_all(&[]).into_iter().map(sorted).collect::<Vec<_>>(),
        with_unmanaged
    );
    // Node 1: its Raft database is garbage.
    std::fs::write(site.data_dir(0).join("raft.redb"), b"not a database").unwrap();
    // Node 2: its data directory is gone (a file stands in its way).
    std::fs::remove_dir_all(site.data_dir(1)).unwrap();
    std::fs::write(site.data_dir(1), b"").unwrap();
    // Node 3: the Raft database and the ledger are both gone; only the
    // interface's tags are left.
    std::fs::write(site.data_dir(2).join("raft.redb"), b"").unwrap();
    std::fs::remove_file(site.runtime_dir(2).join("ledger")).unwrap();
    for (i, held) in before.iter().enumerate() {
        let out = site.fence(i);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "imap{}: {}{said}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains(&format!("released {} address", held.len())),
            "imap{}: {said}",
            i + 1
        );
        assert_eq!(
            site.held(i),
            vec![unmanaged(i)],
            "imap{}: only the unmanaged address stays",
            i + 1
        );
        let peer = site.lan.host(HOSTS[i]).ip(&["-4", "-o", "addr", "show", "dev", IFACE]);
        assert!(
            peer.contains(&format!("10.99.0.{}/", i + 1)),
            "imap{}: its own address stays: {peer}",
            i + 1
        );
    }
    // What the fence left in the ledger: nothing to release.
    for i in [0, 2] {
        let ledger = std::fs::read_to_string(site.runtime_dir(i).join("ledger")).unwrap_or_default();
        assert!(ledger.trim().is_empty(), "imap{}: {ledger}", i + 1);
    }
}

/// `slotctl store add` of store "reborn" on removed store `name`'s slots
/// (from the planned topology the site was given), mastered by its old
/// `replica`, with its old master IP.
fn reborn(site: &Site, name: &str, master: &str, replica: &str, master_ip: &str) -> Vec<String> {
    let topology = site.topology();
    let planned = topology.stores.iter().find(|s| s.name == name).unwrap();
    let slot_of: BTreeMap<String, String> = planned
        .slots
        .iter()
        .map(|r| (format!("imap{}", r.node), r.slot.clone()))
        .collect();
    let slots = format!("{replica}:{},{master}:{}", slot_of[replica], slot_of[master]);
    [
        "store",
        "add",
        "--name",
        "reborn",
        "--master-ip",
        master_ip,
        "--replica-ip",
        "10.128.9.9/32",
        "--slots",
        &slots,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn a_removed_store_leaves_no_ghost_and_its_ip_goes_to_a_new_store() {
    let site = Site::start("fzg");
    let before = site.init();
    let store = &before["stores"][0];
    let (name, master) = (store["name"].as_str().unwrap(), store["master"].as_str().unwrap());
    let master_ip = store["master_ip"].as_str().unwrap().to_owned();
    let replica_ip = store["replica_ip"].as_str().unwrap().to_owned();
    let replica = store["replicas"][0].as_str().unwrap().to_owned();
    let out = site.slotctl(0, &["store", "remove", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Nobody answers for its addresses any more.
    wait_for("the removed store's addresses released everywhere", WAIT, || {
        site.held_all(&[])
            .iter()
            .all(|h| !h.contains(&master_ip) && !h.contains(&replica_ip))
            .then_some(())
    });
    // A new store gets the same master IP, mastered by the old replica,
    // once lease + margin have passed (a cut-off old master could hold it
    // until then: see the next test).
    let add = reborn(&site, name, master, &replica, &master_ip);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    wait_for("the freed address given out again", WAIT, || {
        let out = site.slotctl(0, &add);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("free again in"), "{err}");
        }
        out.status.success().then_some(())
    });
    let after = site.served_by_masters(0);
    let reborn = find_store(&after, "reborn");
    assert_eq!(reborn["master"], replica.as_str());
    let holders: Vec<&str> = (0..3)
        .filter(|i| site.held(*i).contains(&master_ip))
        .map(|i| HOSTS[i])
        .collect();
    assert_eq!(holders.len(), 1, "{master_ip} held by {holders:?}");
}

/// `store remove` while the store's master is cut off: it does not hear of
/// the removal and keeps the address until its lease runs out. A new store
/// asking for that address is refused until lease + margin have passed
/// since the removal, so, sampled every 10 ms, the address never has two
/// holders, and the new store gets it afterwards.
#[test]
fn a_removed_stores_ip_is_not_given_out_while_a_cut_off_master_may_hold_it() {
    let site = Site::start("fzc");
    let before = site.init();
    let lead = leader(&before);
    let store = before["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["master"] != format!("imap{}", lead + 1).as_str())
        .unwrap()
        .clone();
    let name = store["name"].as_str().unwrap().to_owned();
    let master = store["master"].as_str().unwrap().to_owned();
    let replica = store["replicas"][0].as_str().unwrap().to_owned();
    let index_of = |node: &str| (0..3).find(|i| format!("imap{}", i + 1) == node).unwrap();
    let (victim, new_master) = (index_of(&master), index_of(&replica));
    let master_ip = store["master_ip"].as_str().unwrap().to_owned();
    let add = reborn(&site, &name, &master, &replica, &master_ip);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    assert!(site.held(victim).contains(&master_ip), "{:?}", site.held(victim));

    let port = format!("p-{}", HOSTS[victim]);
    site.lan.switch().ip(&["link", "set", &port, "down"]);
    let removing = Instant::now();
    let out = site.slotctl(lead, &["store", "remove", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Sample the holders every 10 ms; between samples, ask for the address
    // now and then, until it is given out and served by the new master.
    let holders = || -> Vec<usize> { (0..3).filter(|i| site.held(*i).contains(&master_ip)).collect() };
    let (mut accepted, mut refusals, mut rounds) = (None, 0, 0u32);
    let deadline = removing + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "accepted {accepted:?}, holders {:?}",
            holders()
        );
        let now = holders();
        assert!(
            now.len() <= 1,
            "{master_ip} held by {now:?} at {:?}",
            removing.elapsed()
        );
        if accepted.is_some() && now == [new_master] {
            break;
        }
        rounds += 1;
        if accepted.is_none() && rounds % 20 == 0 {
            let out = site.slotctl(lead, &add);
            if out.status.success() {
                accepted = Some(removing.elapsed());
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(&format!("{master_ip} was freed")), "{err}");
                refusals += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let accepted = accepted.unwrap();
    let t = Timing::default();
    eprintln!("cut master: {refusals} refusals; given out again after {accepted:?}");
    assert!(
        accepted >= t.lease() + t.clock_skew_margin(),
        "given out after {accepted:?}"
    );

    // Heal: the old master, replica of nothing now, holds nothing.
    site.lan.switch().ip(&["link", "set", &port, "up"]);
    let after = site.served_by_masters(lead);
    assert_eq!(find_store(&after, "reborn")["master"], replica.as_str());
    assert_eq!(holders(), vec![new_master]);
}

/// `slotd fence` beside a live agent would pull addresses from under it:
/// refused, nothing released. Run by systemd after a stop (ExecStopPost
/// sets SERVICE_RESULT), the agent is gone or beyond saving (stuck in the
/// kernel, SIGKILL did not end it): it releases, but tells nobody.
#[test]
fn fence_beside_a_live_agent_refuses_unless_systemd_stopped_it() {
    let site = Site::start("fzb");
    site.init();
    let held = site.held(0);
    assert!(!held.is_empty());
    let out = site.fence(0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("agent.lock") && err.contains("held by another process"),
        "{err}"
    );
    assert_eq!(site.held(0), held, "a refused fence released addresses");

    let out = site
        .fence_command(0)
        .env("SERVICE_RESULT", "timeout")
        .env("EXIT_CODE", "killed")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("released {} address", held.len())), "{said}");
    assert!(said.contains("the leader was not told"), "{said}");
}
