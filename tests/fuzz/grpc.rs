//! What arrives over gRPC, decoded and checked: any bytes decode as each protobuf message of
//! the API (`omraft::pb`, requests and the replies clients and nodes read) or are refused,
//! never a panic, and what decodes encodes back to itself; any bytes in a `RaftMessage` (the
//! Raft transport's records: AppendEntries, Vote, InstallSnapshot, a proposed `Command`, a
//! lease request, and the replies) decode or are refused, never a panic; a `Command` that
//! decodes goes through the state machine's checks as `model` runs them; the text fields of
//! the write requests go through the API's checks (`ObjectPath::parse`, `Ini::parse`,
//! `ObjectKey::parse`, `catalog::parse_update`), refused in short errors.

use std::fmt::Debug;
use std::sync::LazyLock;

use omraft::config::ini::Ini;
use omraft::model::catalog;
use omraft::model::{ClusterState, Command, InstanceReport, ObjectKey, ObjectPath, Response};
use omraft::pb;
use omraft::raft::{codec, Entry, TypeConfig};
use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use prost::Message;

use crate::hostile::{self, check_error};
use crate::model::{self, Op};

/// `bytes` decoded as an `M`: refused, or a message that encodes to bytes decoding to it.
fn round_trips<M: Message + Default + PartialEq + Debug>(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = M::decode(bytes) {
        let again = m.encode_to_vec();
        prop_assert_eq!(again.len(), m.encoded_len(), "{}", name);
        let decoded = M::decode(&again[..]).ok();
        prop_assert_eq!(decoded.as_ref(), Some(&m), "{} encoded back", name);
    }
    Ok(())
}

macro_rules! every_message {
    ($bytes:expr; $($t:ident),* $(,)?) => {{
        $(round_trips::<pb::$t>(stringify!($t), $bytes)?;)*
    }};
}

/// A protobuf varint, `overlong` bytes longer than it needs (or past the ten bytes a varint
/// may have).
fn varint(mut n: u64, overlong: usize, out: &mut Vec<u8>) {
    for _ in 0..overlong {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    loop {
        if n < 0x80 {
            out.push(n as u8);
            return;
        }
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
}

/// Bytes shaped as protobuf fields: tags of every wire type (groups and invalid ones too),
/// varints overlong or past 64 bits, lengths past the end or huge, nested messages, invalid
/// UTF-8 where a string goes.
fn fields() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        vec(any::<u8>(), 0..24),
        hostile::chars(24).prop_map(String::into_bytes),
        Just(vec![0xff, 0xfe, 0xc0, 0x80]),
    ];
    let field = (
        prop_oneof![4 => 1u64..16, 1 => any::<u32>().prop_map(u64::from)],
        0u64..8,
        any::<u64>(),
        prop_oneof![4 => Just(0usize), 1 => 0usize..12],
        payload,
        prop_oneof![4 => Just(None), 1 => any::<u64>().prop_map(Some)],
    );
    vec(field, 0..12).prop_map(|fields| {
        let mut out = Vec::new();
        for (number, wire, value, overlong, payload, length) in fields {
            varint(number << 3 | wire, 0, &mut out);
            match wire {
                0 => varint(value, overlong, &mut out),
                1 => out.extend_from_slice(&value.to_le_bytes()),
                5 => out.extend_from_slice(&(value as u32).to_le_bytes()),
                2 => {
                    varint(length.unwrap_or(payload.len() as u64), overlong, &mut out);
                    out.extend_from_slice(&payload);
                }
                _ => out.extend_from_slice(&payload),
            }
        }
        out
    })
}

/// A request every field of which is set, to mutate.
fn full_request() -> Vec<u8> {
    pb::ObjectCreateRequest {
        path: "demo/svc/kvm1".into(),
        kws: vec![pb::KeyValue {
            key: "volume#data.size".into(),
            value: "4G".into(),
        }],
        config_text: crate::ini::TUTORIAL.into(),
    }
    .encode_to_vec()
}

/// Bytes: arbitrary, shaped as fields, or a message mutated.
fn protobuf() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..200),
        3 => fields(),
        2 => vec((any::<usize>(), any::<u8>()), 1..6).prop_map(|edits| edited(full_request(), edits)),
    ]
}

/// Records this cluster writes, encoded, to mutate.
fn records() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = model::setup(2)
        .iter()
        .scan(omraft::model::ClusterState::default(), |state, op| {
            let cmd = op.resolve(state);
            state.apply(&cmd);
            Some(codec::encode(&cmd).unwrap())
        })
        .collect();
    let report = InstanceReport {
        avail: omraft::model::Avail::Up,
        warn: false,
        provisioned: true,
        resources: vec![],
    };
    out.push(codec::encode(&Response::Refused(omraft::model::Rejection::NotRunning("x".into()))).unwrap());
    out.push(codec::encode(&report).unwrap());
    out.push(codec::encode(&7u64).unwrap());
    out.push(serde_json::to_vec(&model::setup(1).last().unwrap().resolve(&Default::default())).unwrap());
    out
}

/// The state `model::setup(2)` makes, where commands resolve.
static CLUSTER: LazyLock<ClusterState> = LazyLock::new(|| {
    let mut state = ClusterState::default();
    for op in model::setup(2) {
        let cmd = op.resolve(&state);
        state.apply(&cmd);
    }
    state
});

/// A command of the state machine's vocabulary, as the cluster would resolve it.
fn command() -> impl Strategy<Value = Command> {
    model::op().prop_map(|op| op.resolve(&CLUSTER))
}

/// `bytes` with up to a few bytes changed.
fn edited(bytes: Vec<u8>, edits: Vec<(usize, u8)>) -> Vec<u8> {
    let mut bytes = bytes;
    for (at, b) in edits {
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] = b;
        }
    }
    bytes
}

/// Bytes for a `RaftMessage`: arbitrary, binary or JSON; records and commands mutated; deep
/// nesting.
fn raft_record() -> impl Strategy<Value = Vec<u8>> {
    let records = records();
    prop_oneof![
        4 => (command(), any::<bool>(), vec((any::<usize>(), any::<u8>()), 0..3)).prop_map(|(cmd, binary, edits)| {
            let bytes = if binary { codec::encode(&cmd).unwrap() } else { serde_json::to_vec(&cmd).unwrap() };
            edited(bytes, edits)
        }),
        2 => vec(any::<u8>(), 0..200),
        2 => vec(any::<u8>(), 0..200).prop_map(|b| [vec![codec::BINARY], b].concat()),
        2 => hostile::text(&["{", "}", "[", "]", "\"", ":", ",", "\"Bootstrap\"", "\"vote\"", "null", "1e999", "-1"])
            .prop_map(String::into_bytes),
        3 => (select(records), vec((any::<usize>(), any::<u8>()), 1..6)).prop_map(|(bytes, edits)| edited(bytes, edits)),
        1 => (1usize..3000, any::<bool>(), any::<bool>()).prop_map(|(depth, binary, maps)| {
            // A command with an unknown field, its value nested `depth` deep: arrays or maps of
            // one element in MessagePack, arrays in JSON.
            let mut bytes = Vec::new();
            if binary {
                bytes.extend_from_slice(&[codec::BINARY, 0x81, 0xa9]);
                bytes.extend_from_slice(b"Bootstrap");
                bytes.extend_from_slice(&[0x81, 0xa1, b'z']);
                let open: &[u8] = if maps { &[0x81, 0xa1, b'x'] } else { &[0x91] };
                bytes.extend(open.iter().copied().cycle().take(open.len() * depth));
                bytes.push(0xc0);
            } else {
                bytes.extend_from_slice(b"{\"Bootstrap\":{\"z\":");
                bytes.extend(std::iter::repeat_n(b'[', depth));
                bytes.push(b'1');
            }
            bytes
        }),
    ]
}

/// A text field of a request: hostile, or what the API expects.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        crate::values::value(),
        select(&["demo/svc/kvm1", "kvm1", "volume#data.size", "cluster.name", "4G"][..]).prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(crate::config(30_000))]

    #[test]
    fn any_bytes_decode_as_every_api_message_or_are_refused(bytes in protobuf()) {
        every_message!(&bytes[..];
            RaftMessage, ObjectRef, ObjectCreateRequest, ObjectConfigUpdateRequest, ObjectConfigShowRequest,
            ObjectConfigGetRequest, ObjectConfigDocRequest, KeywordDoc, ObjectConfigDocReply, ObjectListRequest,
            ObjectRow, ObjectListReply, KeyPutRequest, KeyRequest, KeyListReply, KeyDecodeReply, PoolListRequest,
            PoolRow, PoolListReply, DeviceRow, DeviceListReply, ReportVolumeGroupsRequest, VolumeGroup, KeyValue,
            ConfigUpdateRequest, ConfigUpdateReply, ConfigGetRequest, ConfigGetReply, ConfigShowRequest, Section,
            ConfigShowReply, IssueTokenRequest, IssueClientCertRequest, IssueClientCertReply, RevokeCertRequest,
            RotateSigningKeyRequest, RotateSigningKeyReply, IssueTokenReply, JoinRequest, JoinReply, AdmitRequest,
            AdmitReply, AddMemberRequest, AddMemberReply, RemoveNodeRequest, RemoveNodeReply, NodeStatusRequest,
            Link, NodeStatus, MonRequest, MonNode, MonObject, MonReply, ObjectActionRequest, ResourceView,
            InstanceView, InstanceStatusReply, NodeFreezeRequest, DrbdFenceRequest, DrbdFenceReply,
        );
    }

}

proptest! {
    #![proptest_config(crate::config(20_000))]

    #[test]
    fn any_raft_record_decodes_or_is_refused_and_a_command_meets_the_state_machines_checks(
        bytes in raft_record(),
        setup_steps in 0u8..3,
    ) {
        let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes);
        let _ = codec::decode::<VoteRequest<u64>>(&bytes);
        let _ = codec::decode::<InstallSnapshotRequest<TypeConfig>>(&bytes);
        let _ = codec::decode::<u64>(&bytes);
        let _ = codec::decode::<Entry>(&bytes);
        let _ = codec::decode::<omraft::raft::store::SmData>(&bytes);
        let _ = codec::decode::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(&bytes);
        let _ = codec::decode::<Result<VoteResponse<u64>, RaftError<u64>>>(&bytes);
        let _ = codec::decode::<Result<InstallSnapshotResponse<u64>, RaftError<u64>>>(&bytes);
        let _ = codec::decode::<Result<(u64, Response), String>>(&bytes);
        if let Ok(cmd) = codec::decode::<Command>(&bytes) {
            let ops: Vec<Op> = model::setup(setup_steps).into_iter().chain([Op::Cmd(cmd)]).collect();
            model::run(&ops)?;
        }
    }

}

proptest! {
    #![proptest_config(crate::config(10_000))]

    #[test]
    fn every_command_encodes_and_decodes_back_to_itself_binary_or_json(cmd in command()) {
        let binary = codec::encode(&cmd).unwrap();
        prop_assert_eq!(codec::decode::<Command>(&binary).unwrap(), cmd.clone());
        let json = serde_json::to_vec(&cmd).unwrap();
        prop_assert_eq!(codec::decode::<Command>(&json).unwrap(), cmd);
    }

    #[test]
    fn a_mon_request_is_paged_or_refused_with_a_bounded_message(
        filter in field_text(),
        after in prop_oneof![field_text(), Just("demo/svc/kvm1".to_string())],
        limit in prop_oneof![0u32..2000, Just(u32::MAX)],
    ) {
        match omraft::api::MonPage::parse(&pb::MonRequest { filter, after, limit }) {
            Ok(_) => prop_assert!(limit <= omraft::api::MON_PAGE_MAX),
            Err(e) => check_error("MonPage::parse", &e)?,
        }
    }

    #[test]
    fn the_text_of_a_write_request_is_checked_as_the_api_checks_it(
        path in field_text(),
        text in crate::ini::text(),
        kws in vec((field_text(), field_text()), 0..4),
        unset in vec(field_text(), 0..2),
    ) {
        // Sent, received: the request as the server decodes it.
        let sent = pb::ObjectCreateRequest {
            path,
            kws: kws.iter().map(|(key, value)| pb::KeyValue { key: key.clone(), value: value.clone() }).collect(),
            config_text: text,
        };
        let req = pb::ObjectCreateRequest::decode(&sent.encode_to_vec()[..]).unwrap();
        prop_assert_eq!(&req, &sent);
        if let Err(e) = ObjectPath::parse(&req.path) {
            check_error("ObjectPath::parse", &e.to_string())?;
        }
        match Ini::parse(&req.config_text) {
            Ok(mut config) => {
                for kv in &req.kws {
                    match ObjectKey::parse(kv.key.trim()) {
                        Ok(k) => {
                            if let Err(e) = config.set(&k.section, &k.keyword, &kv.value) {
                                check_error("Ini::set", &e.to_string())?;
                            }
                        }
                        Err(e) => check_error("ObjectKey::parse", &e.to_string())?,
                    }
                }
                if let Err(e) = config.check_bounds().and_then(|()| config.check_form()) {
                    check_error("Ini::check_form", &e.to_string())?;
                }
            }
            Err(e) => check_error("Ini::parse", &e.to_string())?,
        }
        let set: Vec<(String, String)> = req.kws.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
        if let Err(e) = catalog::parse_update(&set, &unset) {
            check_error("catalog::parse_update", &e.to_string())?;
        }
    }
}
