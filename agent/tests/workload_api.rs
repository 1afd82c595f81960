//! The Workload API over a real Unix socket, driven by the `spiffe` crate as an independent
//! client (and by the generated client where status codes or raw fields matter).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::{Agent, Domain, my_selectors, other_uid_selector, req, snapshot};
use fedhub_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitBundlesRequest, WitsvidRequest,
    X509BundlesRequest, X509svidRequest,
};
use futures::StreamExt;
use prost_types::value::Kind;
use tonic::Code;

/// How long a test waits to be sure that no stream message comes.
const QUIET: Duration = Duration::from_millis(400);
/// How long a test waits for an expected stream message.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn x509_context_carries_the_svid_and_only_federated_bundles() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let stranger = Domain::new("stranger.test");
    let me = my_selectors().await;
    let agent = Agent::start(&own);
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![own.identity("/web", &me, &[&partner])],
    ));

    let context = agent.client().await.fetch_x509_context().await.unwrap();
    let svid = context.default_svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://own.test/web");
    let bundles = context.bundle_set();
    let own_bundle = bundles.get(&own.spiffe_td()).unwrap();
    assert_eq!(own_bundle.authorities()[0].as_bytes(), own.root_der());
    let partner_bundle = bundles.get(&partner.spiffe_td()).unwrap();
    assert_eq!(
        partner_bundle.authorities()[0].as_bytes(),
        partner.root_der()
    );
    assert!(bundles.get(&stranger.spiffe_td()).is_none());

    // The raw message: spec encodings, map keys and fedhub's federates_with extension.
    let mut stream = agent
        .raw()
        .await
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let message = stream.next().await.unwrap().unwrap();
    let keys: Vec<&String> = message.federated_bundles.keys().collect();
    assert_eq!(keys, ["spiffe://partner.test"]);
    let raw = &message.svids[0];
    assert_eq!(raw.fedhub_federates_with, ["partner.test"]);
    assert_eq!(raw.bundle, own.root_der());
    assert!(raw.x509_svid_key.starts_with(&[0x30]), "PKCS#8 DER");

    // Without federation the partner bundle is not delivered.
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![own.identity("/web", &me, &[])],
    ));
    let context = agent.client().await.fetch_x509_context().await.unwrap();
    assert!(context.bundle_set().get(&partner.spiffe_td()).is_none());
    assert_eq!(context.bundle_set().len(), 1);
}

#[tokio::test]
async fn every_matching_identity_is_served_in_snapshot_order() {
    let own = Domain::new("own.test");
    let me = my_selectors().await;
    let agent = Agent::start(&own);
    let mut db = own.identity("/db", &me[..1], &[]);
    db.hint = "db".into();
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![
            own.identity("/web", &me, &[]),
            own.identity("/nope", &[other_uid_selector()], &[]),
            db,
        ],
    ));
    let svids = agent.client().await.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = svids.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, ["spiffe://own.test/web", "spiffe://own.test/db"]);
    assert_eq!(svids[1].hint(), Some("db"));
}

#[tokio::test]
async fn x509_bundles_hold_the_own_and_the_federated_domains() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let stranger = Domain::new("stranger.test");
    let agent = Agent::start(&own);
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![own.identity("/web", &my_selectors().await, &[&partner])],
    ));
    let bundles = agent.client().await.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.len(), 2);
    assert!(bundles.get(&own.spiffe_td()).is_some());
    assert!(bundles.get(&partner.spiffe_td()).is_some());
}

#[tokio::test]
async fn jwt_svids_and_jwt_bundles() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let stranger = Domain::new("stranger.test");
    let me = my_selectors().await;
    let agent = Agent::start(&own);
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![own.identity("/web", &me, &[&partner])],
    ));
    let client = agent.client().await;

    let svid = client.fetch_jwt_svid(["backend"], None).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://own.test/web");
    assert_eq!(svid.audience(), ["backend"]);
    let id = spiffe::SpiffeId::new("spiffe://own.test/web").unwrap();
    let again = client.fetch_jwt_svid(["backend"], Some(&id)).await.unwrap();
    assert_eq!(again.token(), svid.token(), "cached token reused");

    let bundles = client.fetch_jwt_bundles().await.unwrap();
    assert_eq!(bundles.len(), 2);
    let own_jwt = bundles.get(&own.spiffe_td()).unwrap();
    assert!(own_jwt.find_jwt_authority(own.signer.kid()).is_some());
    let partner_jwt = bundles.get(&partner.spiffe_td()).unwrap();
    assert!(
        partner_jwt
            .find_jwt_authority(partner.signer.kid())
            .is_some()
    );
    assert!(bundles.get(&stranger.spiffe_td()).is_none());
    // The served JWKS verifies the served token (the client's own validation).
    let verified = spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["backend"]);
    assert_eq!(verified.unwrap().spiffe_id(), &id);

    let mut raw = agent.raw().await;
    let status = |audience: &[&str], spiffe_id: &str| JwtsvidRequest {
        audience: audience.iter().map(|a| (*a).to_owned()).collect(),
        spiffe_id: spiffe_id.to_owned(),
    };
    for (request, code) in [
        (status(&[], ""), Code::InvalidArgument),
        (status(&["a", ""], ""), Code::InvalidArgument),
        (status(&["a"], "spiffe://x/"), Code::InvalidArgument),
        (
            status(&["a"], "spiffe://own.test/other"),
            Code::PermissionDenied,
        ),
    ] {
        let error = raw.fetch_jwtsvid(req(request)).await.unwrap_err();
        assert_eq!(error.code(), code, "{error:?}");
    }
}

#[tokio::test]
async fn validation_uses_the_own_and_the_callers_federated_bundles() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let stranger = Domain::new("stranger.test");
    let agent = Agent::start(&own);
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![own.identity("/web", &my_selectors().await, &[&partner])],
    ));
    let now = SystemTime::now();

    let client = agent.client().await;
    let token = partner.token("/api", "web", now);
    let validated = client.validate_jwt_token("web", &token).await.unwrap();
    assert_eq!(
        validated.spiffe_id().to_string(),
        "spiffe://partner.test/api"
    );
    let own_token = own.token("/db", "web", now);
    client.validate_jwt_token("web", &own_token).await.unwrap();

    let mut raw = agent.raw().await;
    let response = raw
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "web".into(),
            svid: token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.spiffe_id, "spiffe://partner.test/api");
    let claims = response.claims.unwrap().fields;
    let Some(Kind::ListValue(aud)) = &claims["aud"].kind else {
        panic!("aud is not a list: {:?}", claims["aud"]);
    };
    assert_eq!(aud.values[0].kind, Some(Kind::StringValue("web".into())));
    assert!(matches!(claims["exp"].kind, Some(Kind::NumberValue(_))));

    let expired = partner.token("/api", "web", now - Duration::from_secs(3600));
    for (audience, svid) in [
        ("web", stranger.token("/api", "web", now)),
        ("web", expired),
        ("other", token.clone()),
        ("", token.clone()),
        ("web", String::new()),
    ] {
        let error = raw
            .validate_jwtsvid(req(ValidateJwtsvidRequest {
                audience: audience.into(),
                svid,
            }))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    }
}

#[tokio::test]
async fn streams_follow_the_callers_view() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let me = my_selectors().await;
    let agent = Agent::start(&own);
    let web = own.identity("/web", &me, &[&partner]);
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], vec![web.clone()]));
    let partner_td = partner.spiffe_td();

    let client = agent.client().await;
    let mut contexts = client.stream_x509_contexts().await.unwrap();
    let mut jwt_bundles = client.stream_jwt_bundles().await.unwrap();
    let first = contexts.next().await.unwrap().unwrap();
    let partner_der = |c: &spiffe::X509Context| {
        c.bundle_set()
            .get(&partner_td)
            .map(|b| b.authorities()[0].as_bytes().to_vec())
    };
    assert_eq!(partner_der(&first), Some(partner.root_der()));
    let first_jwt = jwt_bundles.next().await.unwrap().unwrap();
    assert!(first_jwt.get(&partner_td).is_some());

    // The same view again: no message.
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], vec![web.clone()]));
    assert!(tokio::time::timeout(QUIET, contexts.next()).await.is_err());

    // The partner rotates its CA and JWT key: a new message with the new set.
    let rotated = Domain::new("partner.test");
    agent
        .state
        .publish(snapshot(&own, &[rotated.bundle()], vec![web.clone()]));
    let next = tokio::time::timeout(PROMPT, contexts.next()).await.unwrap();
    assert_eq!(
        partner_der(&next.unwrap().unwrap()),
        Some(rotated.root_der())
    );
    let next_jwt = tokio::time::timeout(PROMPT, jwt_bundles.next())
        .await
        .unwrap();
    let partner_jwt = next_jwt.unwrap().unwrap().get(&partner_td).unwrap();
    assert!(
        partner_jwt
            .find_jwt_authority(rotated.signer.kid())
            .is_some()
    );
    assert!(
        partner_jwt
            .find_jwt_authority(partner.signer.kid())
            .is_none()
    );

    // The entry stops federating: the key disappears (WAPI-29).
    let unfederated = own.identity("/web", &me, &[]);
    agent
        .state
        .publish(snapshot(&own, &[rotated.bundle()], vec![unfederated]));
    let next = tokio::time::timeout(PROMPT, contexts.next()).await.unwrap();
    assert_eq!(partner_der(&next.unwrap().unwrap()), None);

    // The relationship is deleted while the entry still lists it: the key stays away.
    agent.state.publish(snapshot(&own, &[], vec![web.clone()]));
    let next = tokio::time::timeout(PROMPT, contexts.next()).await.unwrap();
    assert_eq!(partner_der(&next.unwrap().unwrap()), None);

    // The caller's last identity goes away: PERMISSION_DENIED ends the stream (WAPI-12).
    let elsewhere = own.identity("/web", &[other_uid_selector()], &[]);
    agent.state.publish(snapshot(&own, &[], vec![elsewhere]));
    let next = tokio::time::timeout(PROMPT, contexts.next()).await.unwrap();
    let error = next.unwrap().unwrap_err();
    assert!(
        matches!(error, spiffe::WorkloadApiError::NoIdentityIssued),
        "{error:?}"
    );
    assert!(
        tokio::time::timeout(PROMPT, contexts.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn x509_bundle_stream_sends_a_new_set_on_rotation() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let web = own.identity("/web", &my_selectors().await, &[&partner]);
    let agent = Agent::start(&own);
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], vec![web.clone()]));
    let mut raw = agent.raw().await;
    let mut stream = raw
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.bundles["spiffe://partner.test"], partner.root_der());
    assert_eq!(first.bundles["spiffe://own.test"], own.root_der());

    let rotated = Domain::new("partner.test");
    agent
        .state
        .publish(snapshot(&own, &[rotated.bundle()], vec![web]));
    let next = tokio::time::timeout(PROMPT, stream.next()).await.unwrap();
    assert_eq!(
        next.unwrap().unwrap().bundles["spiffe://partner.test"],
        rotated.root_der()
    );
}

#[tokio::test]
async fn requests_without_the_security_header_are_invalid() {
    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &my_selectors().await, &[])],
    ));
    let mut raw = agent.raw().await;

    let bare = raw.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(bare.code(), Code::InvalidArgument);
    assert_eq!(bare.message(), "security header missing from request");
    let jwt = raw
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(jwt.code(), Code::InvalidArgument);
    let wit = raw
        .fetch_witsvid(WitsvidRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        wit.code(),
        Code::InvalidArgument,
        "header checked before anything else"
    );

    let mut capitalised = tonic::Request::new(X509svidRequest {});
    capitalised.metadata_mut().insert(
        fedhub_proto::WORKLOAD_SECURITY_HEADER,
        "True".parse().unwrap(),
    );
    let error = raw.fetch_x509svid(capitalised).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    // The same call with the header succeeds.
    raw.fetch_x509svid(req(X509svidRequest {})).await.unwrap();
}

#[tokio::test]
async fn a_caller_without_identity_is_denied() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let agent = Agent::start(&own);
    let elsewhere = own.identity("/web", &[other_uid_selector()], &[&partner]);
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], vec![elsewhere]));
    let mut raw = agent.raw().await;

    let x509 = raw
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(x509.code(), Code::PermissionDenied);
    assert_eq!(x509.message(), "no identity issued");
    let bundles = raw
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(bundles.code(), Code::PermissionDenied);
    let jwt_bundles = raw
        .fetch_jwt_bundles(req(JwtBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(jwt_bundles.code(), Code::PermissionDenied);
    let jwt = raw
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(jwt.code(), Code::PermissionDenied);

    // Validation needs no identity, but only the own trust domain is trusted then.
    let now = SystemTime::now();
    let validate = |svid| {
        req(ValidateJwtsvidRequest {
            audience: "web".into(),
            svid,
        })
    };
    raw.validate_jwtsvid(validate(own.token("/db", "web", now)))
        .await
        .unwrap();
    let foreign = raw
        .validate_jwtsvid(validate(partner.token("/api", "web", now)))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn before_the_first_sync_the_agent_is_unavailable() {
    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    let mut raw = agent.raw().await;

    let x509 = raw
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(x509.code(), Code::Unavailable);
    let jwt = raw
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(jwt.code(), Code::Unavailable);
    let validate = raw
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: own.token("/db", "a", SystemTime::now()),
        }))
        .await
        .unwrap_err();
    assert_eq!(validate.code(), Code::Unavailable);

    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &my_selectors().await, &[])],
    ));
    raw.fetch_x509svid(req(X509svidRequest {})).await.unwrap();
}

#[tokio::test]
async fn the_wit_profile_is_unimplemented() {
    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    let mut raw = agent.raw().await;
    let svid = raw
        .fetch_witsvid(req(WitsvidRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(svid.code(), Code::Unimplemented);
    let bundles = raw
        .fetch_wit_bundles(req(WitBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(bundles.code(), Code::Unimplemented);
}

#[tokio::test]
async fn the_socket_is_world_connectable_and_removed_on_shutdown() {
    let own = Domain::new("own.test");
    let mut agent = Agent::start(&own);
    let mode = std::fs::metadata(agent.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o777);

    // An open stream does not hold shutdown up; it ends with UNAVAILABLE.
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &my_selectors().await, &[])],
    ));
    let mut raw = agent.raw().await;
    let mut stream = raw
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();

    agent.stop().await;
    assert!(!agent.socket_path().exists());
    let end = tokio::time::timeout(PROMPT, stream.next()).await.unwrap();
    assert_eq!(end.unwrap().unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    let mut raw = agent.raw().await;
    let error = raw
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x".repeat(100 * 1024),
        }))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::OutOfRange, "{error:?}");
}

#[tokio::test]
async fn grpc_reflection_describes_the_workload_api() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    let endpoint = spiffe::transport::Endpoint::parse(&agent.uri()).unwrap();
    let mut client =
        ServerReflectionClient::new(spiffe::transport::connect(&endpoint).await.unwrap());
    let ask = |request: MessageRequest| {
        futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }])
    };

    let mut answers = client
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"SpiffeWorkloadAPI".to_owned()), "{names:?}");

    let mut answers = client
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "SpiffeWorkloadAPI".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no file descriptor for the Workload API");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    let methods: Vec<&str> = file.service[0]
        .method
        .iter()
        .filter_map(|m| m.name.as_deref())
        .collect();
    assert!(methods.contains(&"FetchX509SVID"), "{methods:?}");
    assert!(methods.contains(&"FetchJWTSVID"), "{methods:?}");
}
