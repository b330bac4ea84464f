//! The kernel side of the agent: the eBPF programs on the bridge ports.
//!
//! [`Classifier`] owns the loaded object (`weave-ebpf`, built and embedded
//! by this crate's build script) and the links that attach its programs:
//! the isolation classifiers at TC ingress and egress of every container
//! port, and the XDP program on the datapath port. The classifiers' links
//! are pinned in bpffs ([`pins`]), so isolation holds while no agent runs;
//! the datapath link lives as long as the agent (nothing to forward without it).
//!
//! The eBPF programs do not log: every decision is a [`Counter`], read with
//! [`Classifier::counters`], so no `aya-log` bridge is needed.

mod error;
mod fastdp;
mod pins;

use std::{collections::HashMap, ffi::CString, fmt::Write as _, io};

use aya::{
    Ebpf, TestRun as _, TestRunOptions,
    maps::{self, MapData, MapError},
    programs::{Program, SchedClassifier, TcAttachType, Xdp, XdpMode, tc, xdp::XdpLinkId},
    util::KernelVersion,
};
use weave_common::{
    Counter, Endpoint,
    datapath::mac_key,
    fastdp::LOCAL_CONTAINER,
    names::{
        COUNTERS_MAP, DATAPATH_PROG, DATAPATH_SINGLE_BUFFER_PROG, ENDPOINTS_MAP,
        FROM_CONTAINER_PROG, LOCAL_MACS_MAP, PEER_MACS_MAP, TO_CONTAINER_PROG, XSKS_MAP,
    },
};

pub use error::DataplaneError;
pub use fastdp::FastdpMaps;
pub use pins::{namespace_pin_dir, remove_namespace_pins};

use pins::{PinDir, PortLink};

/// The eBPF object, compiled for `bpfel-unknown-none` by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weave-ebpf.o"));

/// The loaded eBPF dataplane and where its programs are attached.
pub struct Classifier {
    ebpf: Ebpf,
    /// Container ports by host-side interface name.
    ports: HashMap<String, Port>,
    datapath: Option<Datapath>,
    /// Whether the kernel loaded the frags-aware datapath program
    /// (`xdp.frags`, Linux 5.18); the single-buffer one is always loaded.
    multi_buffer: bool,
    /// fastdp's links, when it runs.
    fastdp: Option<fastdp::FastdpLinks>,
    /// Where the classifier links are pinned; `None` where bpffs cannot be
    /// had (then they live as long as the agent, and the log says so).
    pins: Option<PinDir>,
}

/// A container port with both classifiers attached; dropping it detaches them.
struct Port {
    ifindex: u32,
    _from_container: PortLink,
    _to_container: PortLink,
}

struct Datapath {
    ifname: String,
    ifindex: u32,
    link: XdpLinkId,
    /// The program attached: the frags-aware or the single-buffer one.
    prog: &'static str,
}

/// The maps the `AF_XDP` data plane drives the datapath program through.
pub struct DatapathMaps {
    /// Where the `AF_XDP` socket is registered (slot 0: a veth's one queue).
    pub sockets: maps::XskMap<MapData>,
    /// MAC (`weave_common::datapath::mac_key`) -> peer short id.
    pub peer_macs: maps::HashMap<MapData, u64, u32>,
}

impl Classifier {
    /// Loads the eBPF object embedded at build time (`aya::include_bytes_aligned!`).
    pub fn load() -> Result<Self, DataplaneError> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(|source| DataplaneError::Load { source })?;
        for prog in [FROM_CONTAINER_PROG, TO_CONTAINER_PROG] {
            classifier_prog(&mut ebpf, prog)?
                .load()
                .map_err(|source| DataplaneError::LoadProgram { prog, source })?;
        }
        xdp_prog(&mut ebpf, DATAPATH_SINGLE_BUFFER_PROG)?
            .load()
            .map_err(|source| DataplaneError::LoadProgram {
                prog: DATAPATH_SINGLE_BUFFER_PROG,
                source,
            })?;
        let multi_buffer = match xdp_prog(&mut ebpf, DATAPATH_PROG)?.load() {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "the kernel refuses multi-buffer XDP (before Linux 5.18?): TCP frames will be cut by the kernel before the agent");
                false
            }
        };
        Ok(Self {
            ebpf,
            ports: HashMap::new(),
            datapath: None,
            multi_buffer,
            fastdp: None,
            pins: None,
        })
    }

    /// From now on, pins the classifier links (see [`pins`]) so they outlive
    /// this process. Without bpffs, logs why and goes on unpinned.
    pub fn pin_links(&mut self) {
        match PinDir::open() {
            Ok(dir) => self.pins = Some(dir),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot pin classifier links in bpffs: isolation lapses if the agent is killed"
            ),
        }
    }

    /// Drops the pinned links of earlier agent runs, once this run's
    /// classifiers are attached to every port that is kept.
    pub fn release_previous_runs(&self) {
        if let Some(pins) = &self.pins {
            match pins.release_other_generations() {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    links = n,
                    "released the classifier links of the previous run"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "releasing the previous run's classifier links")
                }
            }
        }
    }

    /// Attaches the single-buffer datapath program (XDP, generic/SKB mode:
    /// native XDP on a veth turns off TSO on its peer) to `ifname`, for the
    /// plain data plane, which captures what it passes. Attaching to another
    /// interface moves it there. Not the frags-aware one: generic XDP
    /// copies a non-linear skb for it, and a frame it passes loses its
    /// partial checksum's offsets on the way (UDP over an interface with
    /// checksum offload stops arriving).
    pub fn attach_datapath(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        self.attach_datapath_in(ifname, DATAPATH_SINGLE_BUFFER_PROG)
    }

    /// Attaches the frags-aware datapath program (`xdp.frags`, Linux 5.18),
    /// for the `AF_XDP` data plane, which takes every frame and needs TCP
    /// super-frames whole; where the kernel refused it, the single-buffer
    /// one. Returns whether multi-buffer frames can arrive.
    pub fn attach_datapath_multi_buffer(&mut self, ifname: &str) -> Result<bool, DataplaneError> {
        let prog = if self.multi_buffer {
            DATAPATH_PROG
        } else {
            DATAPATH_SINGLE_BUFFER_PROG
        };
        self.attach_datapath_in(ifname, prog)?;
        Ok(self.multi_buffer)
    }

    /// Hands the maps of the datapath program to the `AF_XDP` data plane
    /// (once: they leave the loaded object; the program keeps using them).
    pub fn take_datapath_maps(&mut self) -> Result<DatapathMaps, DataplaneError> {
        Ok(DatapathMaps {
            sockets: self.take_map(XSKS_MAP)?,
            peer_macs: self.take_map(PEER_MACS_MAP)?,
        })
    }

    fn attach_datapath_in(
        &mut self,
        ifname: &str,
        name: &'static str,
    ) -> Result<(), DataplaneError> {
        let ifindex = ifindex(ifname)?;
        if let Some(current) = &self.datapath
            && current.ifname == ifname
            && current.ifindex == ifindex
            && current.prog == name
        {
            return Ok(());
        }
        if let Some(old) = self.datapath.take() {
            let prog = xdp_prog(&mut self.ebpf, old.prog)?;
            // Its device may be gone, and with it the link: nothing to undo then.
            let detached = prog.detach(old.link);
            if interface_is(&old.ifname, old.ifindex) {
                detached.map_err(|source| DataplaneError::Detach {
                    prog: old.prog,
                    iface: old.ifname.clone(),
                    source,
                })?;
            }
        }
        let link = xdp_prog(&mut self.ebpf, name)?
            .attach_to_if_index(ifindex, XdpMode::Skb)
            .map_err(|source| DataplaneError::Attach {
                prog: name,
                iface: ifname.to_owned(),
                source,
            })?;
        self.datapath = Some(Datapath {
            ifname: ifname.to_owned(),
            ifindex,
            link,
            prog: name,
        });
        Ok(())
    }

    /// Writes ENDPOINTS[ifindex(ifname)] = *endpoint FIRST, then attaches
    /// `weave_from_container` at TC ingress and `weave_to_container` at TC egress
    /// of `ifname` (so no frame passes unclassified). Calling it again for an
    /// attached port just rewrites the map entry.
    pub fn attach_endpoint(
        &mut self,
        ifname: &str,
        endpoint: &Endpoint,
    ) -> Result<(), DataplaneError> {
        let ifindex = ifindex(ifname)?;
        self.forget_stale_ports(ifname, ifindex);
        self.write_endpoint(ifindex, endpoint)?;
        if self.ports.contains_key(ifname) {
            return Ok(());
        }
        match self.attach_classifiers(ifname, ifindex) {
            Ok(port) => {
                self.ports.insert(ifname.to_owned(), port);
                Ok(())
            }
            Err(error) => {
                // Nothing is attached: leave no entry behind for the index.
                let _ = self.remove_endpoint(ifindex);
                Err(error)
            }
        }
    }

    /// Removes the map entry and the port's TC links. The interface may
    /// already be gone (its container died): then just forget it, no error.
    pub fn detach_endpoint(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        let Some(port) = self.ports.remove(ifname) else {
            return Ok(());
        };
        let alive = interface_is(ifname, port.ifindex);
        let ifindex = port.ifindex;
        // Dropping the port detaches both classifiers (and unpins them).
        drop(port);
        // Another port may have been given the index of a dead one.
        if !self.ports.values().any(|p| p.ifindex == ifindex) && alive {
            self.remove_endpoint(ifindex)?;
        } else if !self.ports.values().any(|p| p.ifindex == ifindex) {
            let _ = self.remove_endpoint(ifindex);
        }
        Ok(())
    }

    /// Tells the classifiers the weaveDNS address (`None`: off), which they
    /// let DNS to and from through (see `weave_common::isolation`).
    pub fn set_dns_addr(&mut self, addr: Option<std::net::Ipv4Addr>) -> Result<(), DataplaneError> {
        let name = weave_common::names::DNS_ADDR_MAP;
        self.array::<u32>(name)?
            .set(0, addr.map_or(0, u32::from), 0)
            .map_err(|source| DataplaneError::Map {
                map: name,
                op: "write",
                source,
            })
    }

    /// Tells the classifiers the subnets this host is exposed in (the host's
    /// addresses on the bridge): their containers may use it as gateway.
    /// More than `MAX_EXPOSED` is an error (the first ones are written).
    pub fn set_exposed(&mut self, exposed: &[ipnet::Ipv4Net]) -> Result<(), DataplaneError> {
        use weave_common::{
            EndpointAddr,
            isolation::{MAX_EXPOSED, exposed_slot},
        };
        let name = weave_common::names::EXPOSED_MAP;
        let mut array = self.array::<u64>(name)?;
        for i in 0..MAX_EXPOSED {
            let slot = exposed.get(i as usize).map_or(0, |net| {
                exposed_slot(EndpointAddr::new(u32::from(net.addr()), net.prefix_len()))
            });
            array
                .set(i, slot, 0)
                .map_err(|source| DataplaneError::Map {
                    map: name,
                    op: "write",
                    source,
                })?;
        }
        if exposed.len() > MAX_EXPOSED as usize {
            return Err(DataplaneError::Unsupported {
                what: "being the gateway of more than 16 exposed subnets",
                needs: "fewer exposed subnets (the classifiers hold 16)",
            });
        }
        Ok(())
    }

    /// Sum over CPUs of every Counter, in `Counter::ALL` order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let map = self.ebpf.map(COUNTERS_MAP).ok_or(DataplaneError::Missing {
            kind: "map",
            name: COUNTERS_MAP,
        })?;
        let map_error = |op| {
            move |source| DataplaneError::Map {
                map: COUNTERS_MAP,
                op,
                source,
            }
        };
        let counters =
            maps::PerCpuArray::<&MapData, u64>::try_from(map).map_err(map_error("open"))?;
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = counters
                    .get(&(counter as u32), 0)
                    .map_err(map_error("read"))?;
                Ok((counter, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// One line for `weave status`, e.g. "eBPF (TC isolation on 3 ports, XDP generic on vethwe-datapath)".
    pub fn describe(&self) -> String {
        let n = self.ports.len();
        let mut line = format!(
            "eBPF (TC isolation on {n} port{}, ",
            if n == 1 { "" } else { "s" }
        );
        match &self.datapath {
            Some(datapath) => {
                let _ = write!(line, "XDP generic on {})", datapath.ifname);
            }
            None => line.push_str("no datapath XDP)"),
        }
        if let Some(fastdp) = self.describe_fastdp() {
            line.pop();
            let _ = write!(line, ", {fastdp})");
        }
        line
    }

    /// Test hook, not for the agent: runs program `prog` (a name from
    /// [`weave_common::names`]) once on `frame` through `BPF_PROG_TEST_RUN`,
    /// with no interface involved, and returns the program's return value.
    /// A TC program sees skb ifindex 1: the loopback device of the calling
    /// thread's network namespace. `frame` must hold at least 14 bytes.
    pub fn test_run(&self, prog: &str, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.test_run_data(prog, frame).map(|(verdict, _)| verdict)
    }

    /// Like [`Classifier::test_run`], also returning the bytes the program
    /// leaves: for XDP, from the start of its metadata (the destination tag
    /// of `weave_datapath`) to the end of the frame.
    pub fn test_run_data(
        &self,
        prog: &str,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), DataplaneError> {
        self.test_run_ctx(prog, frame, None)
    }

    /// Like [`Classifier::test_run_data`] for a TC program, with the skb
    /// made a GSO super-frame of `gso_size`-byte segments, `gso_segs` of them
    /// (the only GSO fields `BPF_PROG_TEST_RUN` lets a caller set; the GSO
    /// type stays 0, which the kernel treats as not TCP).
    pub fn test_run_gso(
        &self,
        prog: &str,
        frame: &[u8],
        gso_size: u32,
        gso_segs: u32,
    ) -> Result<(u32, Vec<u8>), DataplaneError> {
        // A zeroed `struct __sk_buff` with only these two fields set.
        let mut ctx = [0u8; SK_BUFF_LEN];
        ctx[SK_BUFF_GSO_SEGS..SK_BUFF_GSO_SEGS + 4].copy_from_slice(&gso_segs.to_ne_bytes());
        ctx[SK_BUFF_GSO_SIZE..SK_BUFF_GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
        self.test_run_ctx(prog, frame, Some(&ctx))
    }

    /// Like [`Classifier::test_run`] for a TC program, with `skb->mark` set
    /// (as the host's nftables rules leave it on a frame).
    pub fn test_run_marked(
        &self,
        prog: &str,
        frame: &[u8],
        mark: u32,
    ) -> Result<u32, DataplaneError> {
        let mut ctx = [0u8; SK_BUFF_LEN];
        ctx[SK_BUFF_MARK..SK_BUFF_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        self.test_run_ctx(prog, frame, Some(&ctx))
            .map(|(verdict, _)| verdict)
    }

    fn test_run_ctx(
        &self,
        prog: &str,
        frame: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<(u32, Vec<u8>), DataplaneError> {
        let test_error = |source| DataplaneError::TestRun {
            prog: prog.to_owned(),
            source,
        };
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx,
            ..TestRunOptions::default()
        };
        let result = match self.ebpf.program(prog) {
            Some(Program::SchedClassifier(p)) => p.test_run(opts),
            Some(Program::Xdp(p)) => p.test_run(opts),
            Some(_) | None => {
                return Err(test_error(
                    aya::programs::ProgramError::UnexpectedProgramType,
                ));
            }
        };
        let result = result.map_err(test_error)?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Test hook, not for the agent: writes ENDPOINTS[ifindex] (or removes it
    /// with `None`) without attaching anything, for [`Classifier::test_run`].
    pub fn set_endpoint_for_test(
        &mut self,
        ifindex: u32,
        endpoint: Option<&Endpoint>,
    ) -> Result<(), DataplaneError> {
        match endpoint {
            Some(endpoint) => self.write_endpoint(ifindex, endpoint),
            None => self.remove_endpoint(ifindex),
        }
    }

    /// Drops what is known about ports whose device is gone: one known under
    /// `ifname` with another index (the device was recreated), or one known
    /// under another name with `ifindex` (the index was reused, or the device
    /// renamed). Their links died with the device or are replaced below; the
    /// map entry for `ifindex` is about to be rewritten.
    fn forget_stale_ports(&mut self, ifname: &str, ifindex: u32) {
        let stale: Vec<String> = self
            .ports
            .iter()
            .filter(|(name, port)| (name.as_str() == ifname) != (port.ifindex == ifindex))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(port) = self.ports.remove(&name) {
                let reused = self.ports.values().any(|p| p.ifindex == port.ifindex);
                if port.ifindex != ifindex && !reused {
                    let _ = self.remove_endpoint(port.ifindex);
                }
            }
        }
    }

    fn attach_classifiers(&mut self, ifname: &str, ifindex: u32) -> Result<Port, DataplaneError> {
        // TCX (kernel >= 6.6, what aya uses there) needs no qdisc; the netlink
        // fallback needs clsact on the device.
        if !tcx_supported() {
            ensure_clsact(ifname)?;
        }
        let attach = |ebpf: &mut Ebpf, prog: &'static str, at: TcAttachType, hook: &str| {
            let program = classifier_prog(ebpf, prog)?;
            let attach_error = |source| DataplaneError::Attach {
                prog,
                iface: ifname.to_owned(),
                source,
            };
            let id = program.attach(ifname, at).map_err(attach_error)?;
            let link = program.take_link(id).map_err(attach_error)?;
            match &self.pins {
                Some(pins) => pins
                    .pin(ifname, hook, link)
                    .map_err(|source| DataplaneError::Pin {
                        iface: ifname.to_owned(),
                        source,
                    }),
                None => Ok(PortLink::Held { _link: link }),
            }
        };
        // On error the ingress link, already attached, is dropped: detached.
        let from_container = attach(
            &mut self.ebpf,
            FROM_CONTAINER_PROG,
            TcAttachType::Ingress,
            "ingress",
        )?;
        let to_container = attach(
            &mut self.ebpf,
            TO_CONTAINER_PROG,
            TcAttachType::Egress,
            "egress",
        )?;
        Ok(Port {
            ifindex,
            _from_container: from_container,
            _to_container: to_container,
        })
    }

    fn endpoints(&mut self) -> Result<maps::HashMap<&mut MapData, u32, Endpoint>, DataplaneError> {
        self.hash_map(ENDPOINTS_MAP)
    }

    /// The loaded object's hash map `name`, opened in place.
    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<maps::HashMap<&mut MapData, K, V>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        maps::HashMap::try_from(map).map_err(|source| DataplaneError::Map {
            map: name,
            op: "open",
            source,
        })
    }

    /// The loaded object's array map `name`, opened in place.
    fn array<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<maps::Array<&mut MapData, V>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        maps::Array::try_from(map).map_err(|source| DataplaneError::Map {
            map: name,
            op: "open",
            source,
        })
    }

    /// Takes map `name` out of the loaded object (the programs keep using
    /// it) as the typed map `T`; once per map.
    fn take_map<T>(&mut self, name: &'static str) -> Result<T, DataplaneError>
    where
        T: TryFrom<maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        T::try_from(map).map_err(|source| DataplaneError::Map {
            map: name,
            op: "open",
            source,
        })
    }

    fn write_endpoint(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<(), DataplaneError> {
        self.set_local_mac(endpoint.mac, LOCAL_CONTAINER)?;
        self.endpoints()?
            .insert(ifindex, endpoint, 0)
            .map_err(|source| DataplaneError::Map {
                map: ENDPOINTS_MAP,
                op: "write",
                source,
            })
    }

    /// Records a MAC of this host's bridge (`fastdp::LOCAL_*`): fastdp never
    /// takes a frame from a peer that claims one as its source, and hands
    /// super-frames only to containers.
    pub fn set_local_mac(&mut self, mac: [u8; 6], kind: u32) -> Result<(), DataplaneError> {
        self.local_macs()?
            .insert(mac_key(mac), kind, 0)
            .map_err(|source| DataplaneError::Map {
                map: LOCAL_MACS_MAP,
                op: "write",
                source,
            })
    }

    fn local_macs(&mut self) -> Result<maps::HashMap<&mut MapData, u64, u32>, DataplaneError> {
        self.hash_map(LOCAL_MACS_MAP)
    }

    /// Removes `ENDPOINTS[ifindex]` and its MAC from `LOCAL_MACS`; an absent
    /// entry is not an error.
    fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        if let Ok(old) = self.endpoints()?.get(&ifindex, 0) {
            // Best effort: a MAC left behind only makes fastdp more careful.
            let _ = self.local_macs()?.remove(&mac_key(old.mac));
        }
        match self.endpoints()?.remove(&ifindex) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(DataplaneError::Map {
                map: ENDPOINTS_MAP,
                op: "remove from",
                source,
            }),
        }
    }
}

fn classifier_prog<'a>(
    ebpf: &'a mut Ebpf,
    prog: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(prog)
        .ok_or(DataplaneError::Missing {
            kind: "program",
            name: prog,
        })?
        .try_into()
        .map_err(|source| DataplaneError::LoadProgram { prog, source })
}

fn xdp_prog<'e>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DataplaneError::LoadProgram { prog: name, source })
}

/// `struct __sk_buff` (uapi `linux/bpf.h`): its size and the offsets of
/// `mark` (after `len` and `pkt_type`), for [`Classifier::test_run_marked`],
/// and of `gso_segs` and `gso_size`, for [`Classifier::test_run_gso`]. The two
/// `__bpf_md_ptr` unions are 8 bytes, 8-aligned: `flow_keys` at 144,
/// `tstamp` 152, `wire_len` 160, `gso_segs` 164, `sk` 168, `gso_size` 176,
/// `tstamp_type` 180, `hwtstamp` 184. A wrong offset is refused (`EINVAL`:
/// the kernel wants `sk` zero) or lands in `hwtstamp` unnoticed; the
/// `fastdp_programs` tests see `gso_size` in the program's size verdicts.
const SK_BUFF_LEN: usize = 192;
const SK_BUFF_MARK: usize = 8;
const SK_BUFF_GSO_SEGS: usize = 164;
const SK_BUFF_GSO_SIZE: usize = 176;

/// The index of interface `ifname` in the agent's network namespace.
fn ifindex(ifname: &str) -> Result<u32, DataplaneError> {
    let no_such = || DataplaneError::NoSuchInterface {
        iface: ifname.to_owned(),
    };
    let name = CString::new(ifname).map_err(|_| no_such())?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENODEV) {
                Err(no_such())
            } else {
                Err(DataplaneError::Interface {
                    iface: ifname.to_owned(),
                    source: error,
                })
            }
        }
        index => Ok(index),
    }
}

/// True when `ifname` still exists with index `ifindex`.
fn interface_is(ifname: &str, ifindex: u32) -> bool {
    self::ifindex(ifname).is_ok_and(|index| index == ifindex)
}

fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Adds the clsact qdisc the netlink TC attachment needs, unless present.
fn ensure_clsact(ifname: &str) -> Result<(), DataplaneError> {
    match tc::qdisc_add_clsact(ifname) {
        Ok(()) | Err(tc::TcError::AlreadyAttached) => Ok(()),
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(DataplaneError::Attach {
            prog: FROM_CONTAINER_PROG,
            iface: ifname.to_owned(),
            source: aya::programs::ProgramError::TcError(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    /// The agent moves the classifier into its dataplane task.
    #[test]
    fn classifier_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Classifier>();
    }
}
