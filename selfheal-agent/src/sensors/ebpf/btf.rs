//! A small reader for the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Our eBPF programs are written in Rust, which cannot emit CO-RE relocations, so the agent looks
//! up the kernel struct offsets the programs need here and passes them in as globals. aya keeps
//! its BTF type accessors private, hence this reader. Layout: `include/uapi/linux/btf.h`.

use std::collections::HashMap;
use std::path::PathBuf;

const SYS_FS_PATH: &str = "/sys/kernel/btf/vmlinux";
const HEADER_LEN: usize = 24;
/// Longest chain of qualifiers or nested anonymous members followed; longer means a cycle.
const MAX_DEPTH: usize = 32;
// The kinds (BTF_KIND_*) this reader looks inside.
const PTR: u8 = 2;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const TYPEDEF: u8 = 8;
const FUNC_PROTO: u8 = 13;

type Result<T, E = BtfError> = std::result::Result<T, E>;

macro_rules! malformed {
    ($($arg:tt)*) => { BtfError::Malformed(format!($($arg)*)) };
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("{0}: cannot read: {1} (is the kernel built with CONFIG_DEBUG_INFO_BTF=y?)")]
    Read(PathBuf, std::io::Error),
    #[error("BTF is malformed: {0}")]
    Malformed(String),
    #[error("struct {0} is not in this kernel's BTF")]
    UnknownStruct(String),
    #[error("struct {strukt} has no member \"{field}\" in this kernel's BTF")]
    UnknownMember { strukt: String, field: String },
    /// The member exists, but no single byte offset can be given for it.
    #[error("struct {strukt} member \"{field}\" has no usable byte offset: {why}")]
    Unusable {
        strukt: String,
        field: String,
        why: &'static str,
    },
    #[error("tracepoint {0}: typedef btf_trace_{0} is not in this kernel's BTF")]
    UnknownTracepoint(String),
    #[error("tracepoint {0}: btf_trace_{0} is not a pointer to a prototype with a ctx parameter")]
    NotATracepoint(String),
}

/// `UnknownMember` without `why`, `Unusable` with it.
fn member_error(strukt: &str, field: &str, why: Option<&'static str>) -> BtfError {
    let (strukt, field) = (strukt.to_owned(), field.to_owned());
    match why {
        None => BtfError::UnknownMember { strukt, field },
        Some(why) => BtfError::Unusable { strukt, field, why },
    }
}

/// The fixed part of a type (struct btf_type); its kind-specific data follows at `at + 12`.
#[derive(Clone, Copy, Default)]
struct Type {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    at: usize,
}

impl Type {
    fn read(section: &[u8], at: usize) -> Option<Self> {
        let info = read_u32(section, at + 4)?;
        Some(Self {
            name_off: read_u32(section, at)?,
            kind: ((info >> 24) & 0x1f) as u8,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: read_u32(section, at + 8)?,
            at,
        })
    }
}

/// The kernel's types, decoded and indexed by name in one pass.
pub struct KernelBtf {
    /// Indexed by type id; id 0 is `void`.
    types: Vec<Type>,
    /// The type section, where members are read from.
    data: Vec<u8>,
    strings: Vec<u8>,
    /// Struct and union tags (one namespace in C); a name can have several definitions.
    composites: HashMap<Box<[u8]>, Vec<u32>>,
    typedefs: HashMap<Box<[u8]>, u32>,
}

impl KernelBtf {
    /// Parses /sys/kernel/btf/vmlinux.
    pub fn from_sys_fs() -> Result<Self> {
        let path = PathBuf::from(SYS_FS_PATH);
        let bytes = std::fs::read(&path).map_err(|e| BtfError::Read(path, e))?;
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let word = |at: usize| read_u32(bytes, at).map_or(0, |w| w as usize);
        let hdr_len = word(4);
        match bytes {
            _ if bytes.len() < HEADER_LEN => return Err(malformed!("it is shorter than a header")),
            [0x9f, 0xeb, 1, ..] if hdr_len >= HEADER_LEN => {}
            [0x9f, 0xeb, 1, ..] => return Err(malformed!("header length {hdr_len} is too short")),
            [0x9f, 0xeb, v, ..] => return Err(malformed!("version {v} is not supported")),
            [0xeb, 0x9f, ..] => return Err(malformed!("big-endian BTF is not supported")),
            _ => return Err(malformed!("it does not start with the magic 0xeb9f")),
        }
        let section = |at: usize, what: &str| {
            let start = hdr_len.saturating_add(word(at));
            let end = start.saturating_add(word(at + 4));
            let error = || malformed!("the {what} section ends past the end of the data");
            bytes.get(start..end).ok_or_else(error)
        };
        let (data, strings) = (section(8, "type")?, section(16, "string")?);
        let mut btf = Self {
            types: vec![Type::default()],
            data: data.to_vec(),
            strings: strings.to_vec(),
            composites: HashMap::new(),
            typedefs: HashMap::new(),
        };
        let mut at = 0;
        while at < data.len() {
            let id = btf.types.len() as u32;
            let past_end = || malformed!("type {id} runs past the end of the type section");
            let ty = Type::read(data, at).ok_or_else(past_end)?;
            let data_len = match ty.kind {
                1 | 14 | 17 => 4,                         // INT, VAR, DECL_TAG
                3 => 12,                                  // ARRAY
                STRUCT | UNION | 15 | 19 => 12 * ty.vlen, // and DATASEC, ENUM64
                6 | FUNC_PROTO => 8 * ty.vlen,            // and ENUM
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
                kind => return Err(malformed!("type {id} has unknown kind {kind}")),
            };
            btf.types.push(ty);
            at += 12 + data_len;
            if at > data.len() {
                return Err(past_end());
            }
            if matches!(ty.kind, STRUCT | UNION | TYPEDEF) && ty.name_off != 0 {
                let name = c_str(strings, ty.name_off)?.into();
                if ty.kind == TYPEDEF {
                    btf.typedefs.entry(name).or_insert(id);
                } else {
                    btf.composites.entry(name).or_default().push(id);
                }
            }
        }
        Ok(btf)
    }

    /// Byte offset of `field` in `struct name`, searching through anonymous struct/union members
    /// recursively (task_struct keeps fields inside anonymous structs on some configs).
    /// A dotted path follows embedded (non-pointer) struct members: "se.sum_exec_runtime".
    pub fn member_offset(&self, strukt: &str, field: &str) -> Result<u32> {
        let ids = self.composites.get(strukt.as_bytes());
        let ids = ids.ok_or_else(|| BtfError::UnknownStruct(strukt.to_owned()))?;
        // Some names have several definitions (file-local structs): like libbpf, use the ones
        // that have the field, as long as they agree.
        let mut result = Err(BtfError::UnknownStruct(strukt.to_owned()));
        for &id in ids {
            match (self.path_offset(id, strukt, field), &result) {
                (Ok(new), Ok(old)) if new != *old => {
                    let why = "the struct's definitions disagree on it";
                    return Err(member_error(strukt, field, Some(why)));
                }
                (Err(_), Ok(_)) => {}
                (new, _) => result = new,
            }
        }
        result
    }

    /// Number of parameters of the function prototype behind a typedef such as
    /// "btf_trace_sched_process_exit" (typedef -> pointer -> func_proto), which is how the
    /// kernel describes a tp_btf tracepoint's arguments. The leading `void *ctx` is not counted.
    pub fn tracepoint_arg_count(&self, tracepoint: &str) -> Result<usize> {
        let name = format!("btf_trace_{tracepoint}");
        let unknown = || BtfError::UnknownTracepoint(tracepoint.to_owned());
        let typedef = *self.typedefs.get(name.as_bytes()).ok_or_else(unknown)?;
        let pointer = self.ty(self.skip_qualifiers(typedef)?)?;
        let proto = match pointer.kind {
            PTR => self.ty(self.skip_qualifiers(pointer.size_or_type)?)?,
            _ => Type::default(),
        };
        match (proto.kind, proto.vlen) {
            (FUNC_PROTO, 1..) => Ok(proto.vlen - 1),
            _ => Err(BtfError::NotATracepoint(tracepoint.to_owned())),
        }
    }

    fn path_offset(&self, id: u32, strukt: &str, field: &str) -> Result<u32> {
        let (mut composite, mut bits) = (id, 0u64);
        for part in field.split('.') {
            composite = self.skip_qualifiers(composite)?;
            if !matches!(self.ty(composite)?.kind, STRUCT | UNION) {
                let why = "the path crosses a member that is not an embedded struct or union";
                return Err(member_error(strukt, field, Some(why)));
            }
            let found = self.find_member(composite, part, 0)?;
            let (offset, type_id) = found.ok_or_else(|| member_error(strukt, field, None))?;
            if offset % 8 != 0 {
                let why = "it is a bitfield that does not start on a byte";
                return Err(member_error(strukt, field, Some(why)));
            }
            (composite, bits) = (type_id, bits + offset);
        }
        u32::try_from(bits / 8).map_err(|_| malformed!("{strukt}.{field} is past 4 GiB"))
    }

    /// The bit offset and type of member `name` of struct or union `id`, including the members
    /// of its anonymous members.
    fn find_member(&self, id: u32, name: &str, depth: usize) -> Result<Option<(u64, u32)>> {
        if depth > MAX_DEPTH {
            return Err(malformed!("anonymous members nest too deep in type {id}"));
        }
        let ty = self.ty(self.skip_qualifiers(id)?)?;
        if !matches!(ty.kind, STRUCT | UNION) {
            return Ok(None);
        }
        for i in 0..ty.vlen {
            // struct btf_member { name_off, type, offset }, inside `data` as `parse` checked.
            let at = ty.at + 12 + 12 * i;
            let [name_off, type_id, off] =
                [at, at + 4, at + 8].map(|at| read_u32(&self.data, at).unwrap_or_default());
            // With kind_flag set, the top 8 bits hold a bitfield's size; only its start matters.
            let bits = u64::from(if ty.kind_flag { off & 0xff_ffff } else { off });
            // An empty name is an anonymous member, whose members are this struct's members.
            let found = match c_str(&self.strings, name_off)? {
                b"" => self.find_member(type_id, name, depth + 1)?,
                member => Some((0, type_id)).filter(|_| member == name.as_bytes()),
            };
            if let Some((inner, type_id)) = found {
                return Ok(Some((bits + inner, type_id)));
            }
        }
        Ok(None)
    }

    /// Follows TYPEDEF, VOLATILE, CONST, RESTRICT and TYPE_TAG to the type they qualify.
    fn skip_qualifiers(&self, mut id: u32) -> Result<u32> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            if !matches!(ty.kind, TYPEDEF | 9 | 10 | 11 | 18) {
                return Ok(id);
            }
            id = ty.size_or_type;
        }
        Err(malformed!("type {id} is behind a cycle of qualifiers"))
    }

    fn ty(&self, id: u32) -> Result<Type> {
        let ty = self.types.get(id as usize).copied();
        ty.ok_or_else(|| malformed!("type {id} is referenced but does not exist"))
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The NUL-terminated string at `offset` in the string section.
fn c_str(strings: &[u8], offset: u32) -> Result<&[u8]> {
    let tail = strings.get(offset as usize..).unwrap_or_default();
    let end = tail.iter().position(|&b| b == 0);
    end.map(|end| &tail[..end])
        .ok_or_else(|| malformed!("no string at {offset}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn kernel() -> &'static KernelBtf {
        static KERNEL: OnceLock<KernelBtf> = OnceLock::new();
        KERNEL.get_or_init(|| KernelBtf::from_sys_fs().expect("this kernel exposes its BTF"))
    }

    fn offset(strukt: &str, field: &str) -> u32 {
        kernel().member_offset(strukt, field).unwrap()
    }

    #[test]
    fn task_struct_fields_are_found_at_plausible_offsets() {
        let task = |field| offset("task_struct", field);
        let size = kernel().ty(kernel().composites[&b"task_struct"[..]][0]);
        let size = size.unwrap().size_or_type;
        for field in ["exit_code", "pid", "tgid", "__state"] {
            assert!((1..size).contains(&task(field)), "{field}: {}", task(field));
        }
        assert_eq!(task("tgid"), task("pid") + 4);
    }

    #[test]
    fn paths_follow_embedded_structs_typedefs_and_anonymous_members() {
        let task = |field| offset("task_struct", field);
        let runtime = offset("sched_entity", "sum_exec_runtime");
        assert_eq!(task("se.sum_exec_runtime"), task("se") + runtime);
        // pi_lock is a raw_spinlock_t, a typedef of struct raw_spinlock.
        let raw_lock = offset("raw_spinlock", "raw_lock");
        assert_eq!(task("pi_lock.raw_lock"), task("pi_lock") + raw_lock);
        // sk_buff keeps next and prev in a struct inside an anonymous union.
        assert_eq!(offset("sk_buff", "prev"), offset("sk_buff", "next") + 8);
    }

    #[test]
    fn tracepoint_arg_count_excludes_ctx() {
        let count = |tracepoint| kernel().tracepoint_arg_count(tracepoint);
        assert_eq!(count("sched_process_exit").unwrap(), 2);
        assert_eq!(count("sched_switch").unwrap(), 4);
        let expected = "tracepoint nope: typedef btf_trace_nope is not in this kernel's BTF";
        assert_eq!(count("nope").unwrap_err().to_string(), expected);
    }

    #[test]
    fn errors_name_what_was_looked_for() {
        let err = |s, f| kernel().member_offset(s, f).unwrap_err().to_string();
        let expected = "struct no_such_struct is not in this kernel's BTF";
        assert_eq!(err("no_such_struct", "pid"), expected);
        let expected = "struct task_struct has no member \"nope\" in this kernel's BTF";
        assert_eq!(err("task_struct", "nope"), expected);
        assert!(err("task_struct", "real_parent.pid").contains("not an embedded struct"));
        assert!(err("task_struct", "sched_contributes_to_load").contains("bitfield"));
        assert!(err("task_struct", "se.").contains("has no member \"se.\""));
    }

    #[test]
    fn truncated_kernel_btf_is_an_error() {
        let bytes = std::fs::read(SYS_FS_PATH).unwrap();
        let err = |bytes: &[u8]| KernelBtf::parse(bytes).err().unwrap().to_string();
        for len in [0, 1, 23, 24, 1000, bytes.len() / 2, bytes.len() - 1] {
            assert!(!err(&bytes[..len]).is_empty());
        }
        let mut cut = bytes.clone();
        cut[12..16].copy_from_slice(&5u32.to_le_bytes()); // type_len: end inside type 1
        let expected = "BTF is malformed: type 1 runs past the end of the type section";
        assert_eq!(err(&cut), expected);
        cut[..2].reverse();
        let expected = "BTF is malformed: big-endian BTF is not supported";
        assert_eq!(err(&cut), expected);
    }

    /// Types 1..: int, typedef loop (to itself), struct cyclic { loop; }, struct selfish
    /// { struct selfish; }, two `struct dup`, and btf_trace_foo as void (*)(int, int, int).
    fn sample() -> Vec<u8> {
        let strings = "\0int\0loop\0cyclic\0selfish\0dup\0a\0b\0btf_trace_foo\0";
        let s = |name: &str| strings.find(&format!("\0{name}\0")).unwrap() as u32 + 1;
        let (int, strukt, typedef) = (1 << 24, 4 << 24, 8 << 24);
        let types: &[&[u32]] = &[
            &[s("int"), int, 4, 32],
            &[s("loop"), typedef, 2],
            &[s("cyclic"), strukt | 1, 4, 0, 2, 0],
            &[s("selfish"), strukt | 1, 4, 0, 4, 0],
            &[s("dup"), strukt | 1, 4, s("a"), 1, 0],
            &[s("dup"), strukt | 2, 8, s("a"), 1, 32, s("b"), 1, 32],
            &[0, 13 << 24 | 3, 0, 0, 1, 0, 1, 0, 1],
            &[0, 2 << 24, 7],
            &[s("btf_trace_foo"), typedef, 8],
        ];
        let words = types.concat();
        let (type_len, str_len) = (4 * words.len() as u32, strings.len() as u32);
        let header = [0x0101_eb9f, 24, 0, type_len, type_len, str_len];
        let words = header.iter().chain(&words).flat_map(|w| w.to_le_bytes());
        words.chain(strings.bytes()).collect()
    }

    #[test]
    fn cycles_and_disagreeing_definitions_are_errors() {
        let btf = KernelBtf::parse(&sample()).unwrap();
        let err = |s, f| btf.member_offset(s, f).unwrap_err();
        assert!(matches!(err("cyclic", "x"), BtfError::Malformed(_)));
        assert!(matches!(err("selfish", "x"), BtfError::Malformed(_)));
        assert!(matches!(err("dup", "a"), BtfError::Unusable { .. }));
        assert_eq!(btf.member_offset("dup", "b").unwrap(), 4);
        assert_eq!(btf.tracepoint_arg_count("foo").unwrap(), 2);
    }

    #[test]
    fn corrupted_btf_never_panics() {
        let good = sample();
        for (at, byte) in (0..good.len()).flat_map(|at| [0, 1, 0x80, 0xff].map(|b| (at, b))) {
            let mut bad = good.clone();
            bad[at] = byte;
            if let Ok(btf) = KernelBtf::parse(&bad) {
                let _ = ["int", "cyclic", "selfish", "dup"].map(|s| btf.member_offset(s, "a.b"));
                let _ = btf.tracepoint_arg_count("foo");
            }
        }
    }
}
