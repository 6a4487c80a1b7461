//! Tokens (`api::auth`): any text, and any change to a token this cluster signed, is refused
//! by `Claims::verify` and leaves `caller` anonymous, never a panic; a token this cluster
//! signed is accepted exactly while its times hold (minted at most five minutes ahead, not
//! expired, within the lifetime cap) under the current signing key.

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use omraft::api::auth::{self, Caller, Claims, Role, MAX_LIFETIME_SECS};
use omraft::model::Trust;
use omraft::tls::pki::Authority;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::hostile::{self, check_error};

/// How far ahead of a node's clock a token may have been minted (README: Tokens).
const SKEW_SECS: u64 = 300;

/// A clock reading well inside the range a node's clock has.
const NOW: u64 = 1_750_000_000;

/// This cluster's authority and the trust every node holds.
static CLUSTER: LazyLock<(Authority, Trust)> = LazyLock::new(|| {
    let a = Authority::ephemeral();
    let trust = Trust {
        ca: a.ca_der().to_vec(),
        signing_key: a.signing_public(),
        generation: 1,
        ..Trust::default()
    };
    (a, trust)
});

fn role() -> impl Strategy<Value = Role> {
    select(&[Role::Join, Role::Viewer, Role::Operator, Role::Root][..])
}

/// A token of `role` minted at `iat`, valid `secs`, signed by this cluster.
fn token(role: Role, iat: u64, secs: u64) -> String {
    let (a, trust) = &*CLUSTER;
    let node = (role == Role::Join).then(|| "n2".to_string());
    Claims::new(role, iat, secs, trust, node).sign(|m| a.sign_token(m))
}

/// Text shaped like a token or a header.
fn text() -> impl Strategy<Value = String> {
    hostile::text(&[
        ".",
        "Bearer ",
        "eyJ",
        "eyJyb2xlIjoicm9vdCJ9",
        "AAAA",
        "-",
        "_",
        "=",
        "+",
        "/",
        " ",
        "\n",
    ])
}

proptest! {
    #![proptest_config(crate::config(30_000))]

    #[test]
    fn any_text_is_refused_and_leaves_the_caller_anonymous(t in text()) {
        let (_, trust) = &*CLUSTER;
        let verified = Claims::verify(&t, Some(trust), NOW);
        prop_assert!(verified.is_err(), "{:?} verified as {:?}", t, verified);
        check_error("Claims::verify", &verified.unwrap_err().to_string())?;
        let _ = Claims::peek(&t);
        for header in [t.clone(), format!("Bearer {t}")] {
            match auth::caller(Some(&header), Some(1), Some("root"), Some(trust), NOW) {
                Caller::Anonymous(why) => check_error("caller", &why)?,
                other => prop_assert!(false, "{:?} made {:?}", header, other),
            }
        }
    }

}

proptest! {
    #![proptest_config(crate::config(5_000))]

    #[test]
    fn a_token_changed_anywhere_is_refused(
        role in role(),
        edits in vec((any::<usize>(), any::<u8>(), hostile::char()), 1..4),
        forged_role in role(),
    ) {
        let (_, trust) = &*CLUSTER;
        let good = token(role, NOW - 10, 3600);
        prop_assert!(Claims::verify(&good, Some(trust), NOW).is_ok());
        let changed = edits.into_iter().fold(good.clone(), |t, (at, how, c)| hostile::mutate(&t, at, how, c));
        if changed.trim() != good {
            prop_assert!(Claims::verify(&changed, Some(trust), NOW).is_err(), "{:?} verified", changed);
            let header = format!("Bearer {changed}");
            prop_assert!(matches!(auth::caller(Some(&header), None, None, Some(trust), NOW), Caller::Anonymous(_)));
        }
        // Claims rewritten under the original signature.
        let (_, sig) = good.split_once('.').unwrap();
        let mut claims = Claims::peek(&good).unwrap();
        claims.role = forged_role;
        claims.exp = claims.exp.saturating_add(1);
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&claims).unwrap()));
        prop_assert!(Claims::verify(&forged, Some(trust), NOW).is_err());
    }

    #[test]
    fn a_signed_token_counts_exactly_while_its_times_hold(
        role in role(),
        iat in NOW - 2 * MAX_LIFETIME_SECS..NOW + 2 * MAX_LIFETIME_SECS,
        secs in 0..2 * MAX_LIFETIME_SECS,
        other_key in vec(any::<u8>(), 0..40),
        generation in 0u64..3,
    ) {
        let (_, trust) = &*CLUSTER;
        let t = token(role, iat, secs);
        let exp = iat + secs;
        let holds = exp > NOW && iat <= NOW + SKEW_SECS && secs <= MAX_LIFETIME_SECS;
        let verified = Claims::verify(&t, Some(trust), NOW);
        prop_assert_eq!(verified.is_ok(), holds, "iat {} exp {}: {:?}", iat, exp, verified);
        if let Err(e) = verified {
            check_error("Claims::verify", &e.to_string())?;
        }
        // Under another key, or another generation, it never counts.
        let other = Trust { signing_key: other_key, ..trust.clone() };
        prop_assert!(Claims::verify(&t, Some(&other), NOW).is_err());
        let rotated = Trust { generation, ..trust.clone() };
        prop_assert_eq!(Claims::verify(&t, Some(&rotated), NOW).is_ok(), holds && generation == 1);
        prop_assert!(Claims::verify(&t, None, NOW).is_err());
    }
}
