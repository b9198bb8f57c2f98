//! WriteFile after the gate. On POSIX guests no file the daemon creates is ever reachable
//! by another guest user before it is final:
//!
//! - atomic (the default for CREATE, TRUNCATE, EXCLUSIVE): the data goes to `data` in a
//!   private staging directory (`mkdir -m 0700`, the agent's own) made in the target's
//!   resolved directory, through a handle proven to be that file (a nonce); one helper
//!   then sets owner and mode there and renames it over the target (EXCLUSIVE:
//!   hard-links, which fails if the target exists); in a closed directory (nobody but
//!   root can create, rename or remove anything there) a 0600 staged file beside the
//!   target takes the directory's place, and the common finish is one `mv`;
//! - in place (APPEND, `atomic = false`): a missing target is first created empty in a
//!   staging directory with its final mode and hard-linked into place; an existing one
//!   keeps its mode and owner. A new file (CREATE, EXCLUSIVE) whose mode has no bits
//!   beyond 0666, where every directory on the way is root's and holds and the last is
//!   closed, is created by the resolution itself with that mode and written at once.
//!
//! Mode: `permissions`; else, on replace, the existing target's; else `[files]
//! new_file_mode`. Windows guests: written in place, no resolution, no staging, no mode.

use tonic::{Status, Streaming};

use super::{
    super::{budget::ByteBudget, gate::Call, service::GuestAgentService, status::ApiError},
    receive::receive,
    resolve,
};
use crate::{
    pb,
    policy::{path::check_guest_path, request::FileInfo},
    qga::{
        AgentClient, QgaError,
        commands::Whence,
        guestpath::{Place, Resolved, Stage, parent},
    },
};

/// The validated header and what the request needs from the service.
struct Job<'a> {
    s: &'a GuestAgentService,
    client: AgentClient,
    /// The admitted guest.
    domain: String,
    header: pb::WriteFileHeader,
    mode: pb::WriteMode,
    /// The policy's `max_bytes` for the upload.
    budget: ByteBudget,
}

impl Job<'_> {
    fn map(&self, e: QgaError) -> Status {
        self.s.agent_error(&self.domain, e)
    }

    /// For the staging helpers (see [`resolve::helper_status`]).
    fn helper(&self, e: QgaError) -> Status {
        resolve::helper_status(self.s, &self.domain, e)
    }

    async fn receive_into(
        &self,
        file: crate::qga::OpenFile,
        stream: &mut Streaming<pb::WriteFileRequest>,
        atomic: bool,
    ) -> Result<pb::WriteFileResponse, Status> {
        let written = receive(
            &self.client,
            &file,
            stream,
            &self.s.shared.shutdown,
            self.budget,
            &|e| self.map(e),
        )
        .await;
        let closed = file.close().await;
        let (bytes_written, sha256) = match (written, closed) {
            (Ok(w), Ok(())) => w,
            (Err(st), _) => return Err(st),
            (_, Err(e)) => return Err(self.map(e)),
        };
        let expected = &self.header.expected_sha256;
        if !expected.is_empty() && *expected != sha256 {
            return Err(ApiError::InvalidArgument(format!(
                "checksum mismatch: data has sha256 {}, header expected {}{}",
                hex(&sha256),
                hex(expected),
                if atomic {
                    "; the target was not touched"
                } else {
                    ""
                }
            ))
            .into());
        }
        Ok(pb::WriteFileResponse {
            bytes_written,
            sha256,
        })
    }
}

/// WriteFile after the gate: `info` is what the first decision was made on.
pub(crate) async fn write(
    s: &GuestAgentService,
    call: &mut Call,
    header: pb::WriteFileHeader,
    mut stream: Streaming<pb::WriteFileRequest>,
    info: FileInfo,
) -> Result<pb::WriteFileResponse, Status> {
    let mode = check_header(&header)?;
    let client = s.client(call).await?;
    let _transfer = client.transfer_guard();
    let os = client
        .os()
        .await
        .map_err(|e| s.agent_error(call.domain(), e))?;
    check_guest_path(&header.path, Some(&os)).map_err(invalid)?;
    let atomic_write = header.atomic.unwrap_or(true) && mode != pb::WriteMode::Append;
    // Decide on what is really opened (POSIX guests); the limits of a second decision
    // tighten the first's. An atomic upload to a plain path is staged by the same helper.
    let new_mode = header.permissions.unwrap_or(s.shared.new_file_mode);
    let (target, staged, created) = if !resolve::resolves(&client, &header.path).await {
        (None, None, false)
    } else if atomic_write {
        let (t, stage) = resolve::decide_staged(s, call, &client, info).await?;
        (Some(t), stage, false)
    } else if matches!(mode, pb::WriteMode::Create | pb::WriteMode::Exclusive)
        && new_mode & !0o666 == 0
    {
        // A new file whose mode a umask can give: made by the resolution itself.
        let (t, created) =
            resolve::decide_created(s, call, &client, info, 0o777 & !new_mode).await?;
        // What it made is written without proof only where the resolution agrees that
        // only root can reach it; otherwise it is an existing file like any other.
        let sure = created && t.settled && t.dir_closed && t.existing.is_none();
        (Some(t), None, sure)
    } else {
        (
            Some(resolve::decide_resolved(s, call, &client, info).await?),
            None,
            false,
        )
    };
    let job = Job {
        s,
        client,
        domain: call.domain().to_owned(),
        header,
        mode,
        budget: ByteBudget::new(call.limits().max_bytes),
    };
    let Some(target) = target else {
        return windows(&job, &mut stream).await;
    };
    if atomic_write {
        atomic(&job, &target, staged, &mut stream).await
    } else if created {
        created_in_place(&job, &target, &mut stream).await
    } else {
        check_mode(mode, &target)?;
        in_place(&job, &target, &mut stream).await
    }
}

/// What can be refused before anything reaches the guest; returns the write mode.
fn check_header(header: &pb::WriteFileHeader) -> Result<pb::WriteMode, Status> {
    check_guest_path(&header.path, None).map_err(invalid)?;
    if !header.expected_sha256.is_empty() && header.expected_sha256.len() != 32 {
        return Err(invalid("expected_sha256 must be 32 bytes".into()));
    }
    if let Some(p) = header.permissions
        && p > 0o7777
    {
        return Err(invalid(format!("permissions {p:o} are not mode bits")));
    }
    pb::WriteMode::try_from(header.mode)
        .map_err(|_| invalid(format!("unknown write mode {}", header.mode)))
}

/// TRUNCATE needs the target, EXCLUSIVE needs it absent (POSIX guests, as resolved).
fn check_mode(mode: pb::WriteMode, target: &Resolved) -> Result<(), Status> {
    match (mode, &target.existing) {
        (pb::WriteMode::Truncate, None) => Err(ApiError::GuestPathNotFound(format!(
            "{} does not exist (mode TRUNCATE)",
            target.path
        ))
        .into()),
        (pb::WriteMode::Exclusive, Some(_)) => Err(ApiError::GuestPathExists(format!(
            "{} exists (mode EXCLUSIVE)",
            target.path
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Staged upload (in `staged`, made with the resolution, or made now), then one helper:
/// owner, mode, rename (or hard link) into place.
async fn atomic(
    job: &Job<'_>,
    target: &Resolved,
    staged: Option<Stage>,
    stream: &mut Streaming<pb::WriteFileRequest>,
) -> Result<pb::WriteFileResponse, Status> {
    let c = &job.client;
    let suitable = check_mode(job.mode, target).and_then(|()| match &target.existing {
        Some(e) if !e.regular => Err(ApiError::GuestPathUnsuitable(format!(
            "{} is not a regular file; an atomic write would replace it",
            target.path
        ))
        .into()),
        _ => Ok(()),
    });
    if let Err(st) = suitable {
        if let Some(stage) = staged {
            remove_stage(c, &stage).await;
        }
        return Err(st);
    }
    let stage = match staged {
        Some(stage) => stage,
        None => c
            .stage_create(parent(&target.path))
            .await
            .map_err(|e| job.helper(e))?,
    };
    let res = async {
        let Some(file) = c.stage_open(&stage).await.map_err(|e| job.map(e))? else {
            return Err(replaced(&stage.dir));
        };
        let resp = job.receive_into(file, stream, true).await?;
        let mode = job
            .header
            .permissions
            .or(target.existing.map(|e| e.mode))
            .unwrap_or(job.s.shared.new_file_mode);
        let how = if job.mode == pb::WriteMode::Exclusive {
            Place::Exclusive
        } else {
            Place::Replace
        };
        let owner = target.existing.map(|e| (e.uid, e.gid));
        let placed = c
            .stage_finish(&stage, &target.path, resp.bytes_written, mode, owner, how)
            .await
            .map_err(|e| job.helper(e))?;
        if !placed {
            return Err(replaced(&stage.dir));
        }
        Ok(resp)
    }
    .await;
    if res.is_err() {
        remove_stage(c, &stage).await;
    }
    res
}

/// Removes a staging directory after a failure (logged if that fails too).
async fn remove_stage(c: &AgentClient, stage: &Stage) {
    if let Err(e) = c.stage_remove(stage).await {
        tracing::warn!(stage = %stage.dir, error = %e, "removing a staging directory failed");
    }
}

/// In place: a missing target is created (final mode, via a staging directory and a hard
/// link), then opened, re-checked and written.
async fn in_place(
    job: &Job<'_>,
    target: &Resolved,
    stream: &mut Streaming<pb::WriteFileRequest>,
) -> Result<pb::WriteFileResponse, Status> {
    let c = &job.client;
    if target.existing.is_none() {
        let stage = c
            .stage_create(parent(&target.path))
            .await
            .map_err(|e| job.helper(e))?;
        let mode = job.header.permissions.unwrap_or(job.s.shared.new_file_mode);
        let how = if job.mode == pb::WriteMode::Exclusive {
            Place::Exclusive
        } else {
            Place::Create
        };
        let made = match c
            .stage_finish(&stage, &target.path, 0, mode, None, how)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(replaced(&stage.dir)),
            Err(e) => Err(job.helper(e)),
        };
        if made.is_err() {
            let _ = c.stage_remove(&stage).await;
        }
        made?;
    }
    // An existing file is opened as it is ("a" appends like O_APPEND; others "r+": no
    // create, no truncate) and must be the inode seen at resolution: one removed and made
    // again by the open (0666) is refused. A file created just now is opened "r+" (gone
    // meanwhile: NOT_FOUND). CREATE/TRUNCATE empty it only once it is proven.
    let append = job.mode == pb::WriteMode::Append;
    let open_mode = if append && target.existing.is_some() {
        "a"
    } else {
        "r+"
    };
    let file = c
        .open(&target.path, open_mode)
        .await
        .map_err(|e| job.map(e))?;
    // A file created just now is regular; an existing one may not be (a device).
    let regular = target.existing.is_none_or(|e| e.regular);
    let expect = (target.existing.map(|e| e.ino), !append);
    let checked = async {
        let what = (&file, target.path.as_str());
        resolve::verify_open(job.s, &job.domain, c, what, regular, expect).await?;
        let at = if append { Whence::End } else { Whence::Set };
        c.file_seek(file.handle(), 0, at)
            .await
            .map_err(|e| job.map(e))
    }
    .await;
    if let Err(st) = checked {
        let _ = file.close().await;
        return Err(st);
    }
    job.receive_into(file, stream, false).await
}

/// In place into the file the resolution created just now (absent before, every
/// directory on the way root's and holding, the last closed): nobody but root can reach,
/// swap or remove it, so its handle needs no proof (as a settled read's) and nothing is
/// staged. A failed write leaves what was written, as any in-place write does.
async fn created_in_place(
    job: &Job<'_>,
    target: &Resolved,
    stream: &mut Streaming<pb::WriteFileRequest>,
) -> Result<pb::WriteFileResponse, Status> {
    tracing::debug!(path = %target.path, "written in place into the file its resolution made");
    let file = job
        .client
        .open(&target.path, "r+")
        .await
        .map_err(|e| job.map(e))?;
    job.receive_into(file, stream, false).await
}

/// Windows guests: straight into the target (no resolution, staging or mode bits).
async fn windows(
    job: &Job<'_>,
    stream: &mut Streaming<pb::WriteFileRequest>,
) -> Result<pb::WriteFileResponse, Status> {
    let (c, path) = (&job.client, &job.header.path);
    let exists = || async {
        match c.open(path, "r").await {
            Ok(f) => f.close().await.map(|()| true),
            Err(e) if e.to_string().contains("No such file") => Ok(false),
            Err(e) => Err(e),
        }
    };
    match job.mode {
        pb::WriteMode::Truncate if !exists().await.map_err(|e| job.map(e))? => {
            return Err(ApiError::GuestPathNotFound(format!(
                "{path} does not exist (mode TRUNCATE)"
            ))
            .into());
        }
        pb::WriteMode::Exclusive if exists().await.map_err(|e| job.map(e))? => {
            return Err(
                ApiError::GuestPathExists(format!("{path} exists (mode EXCLUSIVE)")).into(),
            );
        }
        _ => {}
    }
    let append = job.mode == pb::WriteMode::Append;
    let file = c
        .open(path, if append { "a" } else { "w" })
        .await
        .map_err(|e| job.map(e))?;
    job.receive_into(file, stream, false).await
}

/// ABORTED: a staging directory was replaced by someone able to write to its parent.
fn replaced(stage: &str) -> Status {
    ApiError::GuestPathChanged(format!(
        "the staging directory {stage} was replaced by someone else; the target was not touched"
    ))
    .into()
}

fn invalid(message: String) -> Status {
    ApiError::InvalidArgument(message).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
