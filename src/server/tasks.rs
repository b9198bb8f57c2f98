//! ListTasks and RunTask: named tasks defined by policy plugins. A task runs like an
//! Exec of its argv, with its parameters checked against the plugin's allowed values
//! and placed as whole arguments.

use tonic::Status;

use super::{
    exec as exec_rpc,
    gate::Call,
    service::{EventStream, GuestAgentService},
    status::ApiError,
};
use crate::pb;

pub(crate) async fn list(
    s: &GuestAgentService,
    _: &Call,
    _: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse, Status> {
    let Some(policy) = &s.shared.gate.policy else {
        return Ok(pb::ListTasksResponse::default());
    };
    let set = policy.snapshot();
    let tasks = set
        .tasks()
        .values()
        .map(|t| pb::TaskInfo {
            name: t.name.clone(),
            description: t.description.clone(),
            params: t
                .params
                .iter()
                .map(|(k, v)| pb::TaskParam {
                    name: k.clone(),
                    allowed_values: v.clone(),
                    required: true,
                })
                .collect(),
        })
        .collect();
    Ok(pb::ListTasksResponse { tasks })
}

pub(crate) async fn run(
    s: &GuestAgentService,
    call: Call,
    r: pb::RunTaskRequest,
) -> Result<EventStream<pb::ExecEvent>, Status> {
    let argv = s
        .shared
        .gate
        .policy
        .as_ref()
        .and_then(|p| p.snapshot().tasks().get(&r.task).cloned())
        .ok_or_else(|| Status::from(ApiError::TaskNotFound(r.task.clone())))
        .and_then(|t| {
            let params = r
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            t.argv_for(&params)
                .map_err(|e| ApiError::InvalidArgument(e).into())
        });
    let mut argv = match argv {
        Ok(a) => a,
        Err(st) => return Err(call.fail(st).await),
    };
    let path = argv.remove(0);
    let req = pb::ExecRequest {
        domain: r.domain,
        command: Some(pb::exec_request::Command::Argv(pb::Argv {
            path,
            args: argv,
        })),
        ..Default::default()
    };
    exec_rpc::exec(s, call, req).await
}
