//! The update machine alone: no processes, threads or files. A simulated
//! host (`Sim`) executes the effects the way the supervisor does, with
//! every outcome a test chooses, and records what happened.

use super::*;
use crate::source::Source;
use crate::update::journal::State;

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn built(v: &str, sha: &str) -> Built {
    Built {
        version: v.into(),
        git_hash: None,
        sha256: sha.into(),
        size: 10,
        url: Source::file(std::path::Path::new(&format!("/store/{v}/ecs-agent"))),
        dir: format!("/store/{v}"),
    }
}

fn target(v: &str, sha: &str) -> Target {
    Target {
        version: v.into(),
        git_hash: None,
        url: Source::parse(&format!("http://127.0.0.1:1/{v}")).unwrap(),
        sha256: sha.into(),
        size: 10,
    }
}

fn request(v: &str, perform: bool) -> Request {
    Request {
        target: target(v, H2),
        source: "http://127.0.0.1:1/m.json".into(),
        origin: Origin::Cli,
        perform,
        force: false,
    }
}

/// What the worker for `desired-image` reports: the agent staged 1.1.0
/// (while it runs: `perform` false; before its exit 42: true).
fn desired_image_1_1_0(perform: bool) -> Input {
    Input::Report(Report::DesiredImage {
        perform,
        result: Ok(Some(target("1.1.0", H2))),
    })
}

/// A reverify worker's report.
fn reverified_report(id: String, result: Result<(), Failure>, seal: Option<Seal>) -> Input {
    Input::Report(Report::Reverified { id, result, seal })
}

/// A host: the store's links and builds, the agent, and what happens to
/// the machine's effects.
#[derive(Default)]
struct Host {
    builds: Vec<Built>,
    current: Option<String>,
    previous: Option<String>,
    /// (version, the update that took its snapshot)
    snapshots: Vec<(String, String)>,
    running: bool,
    stopping: bool,
    desired: bool,
}

impl World for Host {
    fn current(&self) -> Option<Built> {
        self.current.as_ref().and_then(|v| self.build(v))
    }
    fn previous(&self) -> Option<Built> {
        self.previous.as_ref().and_then(|v| self.build(v))
    }
    fn current_is(&self, version: &str) -> bool {
        self.current.as_deref() == Some(version)
    }
    fn build(&self, version: &str) -> Option<Built> {
        self.builds.iter().find(|b| b.version == version).cloned()
    }
    fn snapshot_by(&self, version: &str) -> Option<String> {
        self.snapshots
            .iter()
            .rev()
            .find(|s| s.0 == version)
            .map(|s| s.1.clone())
    }
    fn agent_running(&self) -> bool {
        self.running
    }
    fn agent_down(&self) -> bool {
        !self.running
    }
    fn stopping(&self) -> bool {
        self.stopping
    }
    fn desired_image(&self) -> bool {
        self.desired
    }
    fn desired_image_path(&self) -> String {
        "/var/cache/ecs/desired-image".into()
    }
}

struct Sim {
    m: Machine,
    host: Host,
    /// Every effect executed, in order.
    done: Vec<Effect>,
    /// Steps written to the journal, in order.
    recorded: Vec<Step>,
    /// The journal refuses writes of these steps (all of them: `None`).
    unwritable: Option<Option<Step>>,
    /// The next switch fails.
    switch_fails: bool,
    /// The next start fails.
    start_fails: bool,
    /// The last answer to a request.
    answer: Option<Result<(), Refusal>>,
    /// Work handed out and not yet answered.
    work: Vec<Work>,
}

impl Sim {
    /// A host running 1.0.0 (current) with the machine idle.
    fn new() -> Sim {
        Sim::with(None)
    }

    fn with(rec: Option<Record>) -> Sim {
        Sim {
            m: Machine::new(rec, Quarantine::default(), Vec::new()),
            host: Host {
                builds: vec![built("1.0.0", H1)],
                current: Some("1.0.0".into()),
                running: true,
                ..Host::default()
            },
            done: Vec::new(),
            recorded: Vec::new(),
            unwritable: None,
            switch_fails: false,
            start_fails: false,
            answer: None,
            work: Vec::new(),
        }
    }

    /// Feed `input` and execute the effects as the supervisor would.
    fn feed(&mut self, input: Input) -> &mut Sim {
        let mut queue = VecDeque::from([input]);
        while let Some(i) = queue.pop_front() {
            for e in self.m.handle(i, &self.host) {
                self.done.push(e.clone());
                let next = match e {
                    Effect::Record(rec) => {
                        let refused = match self.unwritable {
                            Some(None) => true,
                            Some(Some(s)) => s == rec.step,
                            None => false,
                        };
                        if refused {
                            queue.push_back(Input::NotRecorded("ENOSPC".into()));
                            break;
                        }
                        self.recorded.push(rec.step);
                        Some(Input::Recorded)
                    }
                    Effect::Work(w) => {
                        self.work.push(w);
                        None
                    }
                    Effect::StopAgent => {
                        self.host.running = false;
                        Some(Input::AgentStopped)
                    }
                    Effect::StartAgent if self.start_fails => {
                        self.start_fails = false;
                        Some(Input::AgentStartFailed("no such file".into()))
                    }
                    Effect::StartAgent => {
                        self.host.running = true;
                        Some(Input::AgentStarted)
                    }
                    Effect::EnsureAgent => {
                        self.host.running = true;
                        None
                    }
                    Effect::Switch { .. } if self.switch_fails => {
                        self.switch_fails = false;
                        queue.push_back(Input::SwitchFailed("read-only file system".into()));
                        break;
                    }
                    Effect::Switch {
                        current, previous, ..
                    } => {
                        match previous {
                            Link::Keep => {}
                            Link::Set(p) => self.host.previous = Some(p),
                            Link::Remove => self.host.previous = None,
                        }
                        self.host.current = Some(current);
                        Some(Input::Switched)
                    }
                    Effect::Answer => {
                        self.answer = Some(Ok(()));
                        None
                    }
                    Effect::Refuse(r) => {
                        self.answer = Some(Err(r));
                        None
                    }
                    _ => None,
                };
                if let Some(n) = next {
                    queue.push_back(n);
                }
            }
        }
        self
    }

    fn id(&self) -> String {
        self.m.record().unwrap().id.clone()
    }

    fn step(&self) -> Step {
        self.m.record().unwrap().step
    }

    fn take_work(&mut self) -> Work {
        assert!(
            !self.work.is_empty(),
            "no work was handed out: {:?}",
            self.done
        );
        self.work.remove(0)
    }

    /// Answer the pending download: the build lands in the store.
    fn staged(&mut self) -> &mut Sim {
        let Work::Download { id, target, .. } = self.take_work() else {
            panic!("not a download")
        };
        self.host
            .builds
            .push(built(&target.version, &target.sha256));
        self.feed(Input::Report(Report::Staged {
            id,
            result: Ok(target),
        }))
    }

    fn reverified(&mut self) -> &mut Sim {
        let Work::Reverify { id, .. } = self.take_work() else {
            panic!("not a reverify")
        };
        self.feed(reverified_report(id, Ok(()), None))
    }

    fn tasks(&mut self) -> &mut Sim {
        let Work::RecordTasks { id, .. } = self.take_work() else {
            panic!("not record-tasks")
        };
        self.feed(Input::Report(Report::Tasks {
            id,
            result: Ok(vec![TaskRecord {
                arn: "arn:task/1".into(),
                containers: vec!["c1".into()],
            }]),
        }))
    }

    fn snapshot(&mut self, result: Result<(), String>) -> &mut Sim {
        let Work::Snapshot { id, version } = self.take_work() else {
            panic!("not a snapshot: {:?}", self.work)
        };
        if result.is_ok() {
            self.host.snapshots.push((version, id.clone()));
        }
        self.feed(Input::Report(Report::Snapshot { id, result }))
    }

    fn gate(&mut self, result: Result<(), String>) -> &mut Sim {
        let Work::Gate { id, seq, .. } = self.take_work() else {
            panic!("not a gate: {:?}", self.work)
        };
        self.feed(Input::Report(Report::Gate { id, seq, result }))
    }

    fn restored(&mut self) -> &mut Sim {
        let Work::Restore { id, .. } = self.take_work() else {
            panic!("not a restore: {:?}", self.work)
        };
        self.feed(Input::Report(Report::Restored { id, result: Ok(()) }))
    }

    fn refusal(&self) -> Refusal {
        match &self.answer {
            Some(Err(r)) => r.clone(),
            other => panic!("not refused: {other:?}"),
        }
    }

    fn did(&self, want: &Effect) -> bool {
        self.done.contains(want)
    }

    fn error(&self) -> Failure {
        self.m.record().unwrap().error.clone().expect("an error")
    }

    /// Update to 1.1.0 up to the health gate (its work handed out).
    fn up_to_gate(&mut self) -> &mut Sim {
        self.feed(Input::Update(request("1.1.0", true)))
            .staged()
            .reverified()
            .tasks()
            .snapshot(Ok(()))
    }
}

use Step::*;

const UPDATE: [Step; 8] = [
    Accepted,
    Downloading,
    Staged,
    Reverify,
    RecordTasks,
    StopOld,
    HealthGate,
    Updated,
];

#[test]
fn an_update_goes_through_every_step() {
    let mut s = Sim::new();
    s.up_to_gate().gate(Ok(()));
    assert_eq!(s.recorded, UPDATE);
    assert_eq!(s.m.record().unwrap().state(), State::Updated);
    assert_eq!(s.host.current.as_deref(), Some("1.1.0"));
    assert_eq!(s.host.previous.as_deref(), Some("1.0.0"));
    assert!(s.host.running);
    assert!(s.did(&Effect::Housekeeping));
    assert!(s.did(&Effect::SyncStore));
    assert_eq!(s.m.record().unwrap().tasks_before.len(), 1);
    assert_eq!(s.m.status().counters.updates.updated, 1);
    // The old agent was stopped before the snapshot, the switch came after.
    let pos = |e: &Effect| s.done.iter().position(|d| d == e).unwrap();
    assert!(pos(&Effect::StopAgent) < pos(&Effect::Failpoint("after-snapshot")));
    assert!(pos(&Effect::Failpoint("after-snapshot")) < pos(&Effect::Failpoint("after-switch")));
}

#[test]
fn the_answer_comes_once_staging_started() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.answer, Some(Ok(())));
    assert_eq!(s.recorded, [Accepted, Downloading]);
    assert!(matches!(s.work[0], Work::Download { .. }));
    assert_eq!(s.m.status().bytes_total, Some(10));
}

#[test]
fn progress_is_counted() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)));
    let id = s.id();
    for done in [4, 9] {
        s.feed(Input::Report(Report::Progress {
            id: id.clone(),
            done,
            total: 10,
        }));
    }
    assert_eq!(s.m.status().bytes_done, Some(9));
    assert_eq!(s.m.status().counters.downloaded_bytes, 9);
}

#[test]
fn stage_stops_at_staged_and_update_performs_it() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", false))).staged();
    assert_eq!(s.recorded, [Accepted, Downloading, Staged]);
    assert!(s.work.is_empty());
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.answer, Some(Ok(())));
    assert_eq!(s.step(), Reverify);
    assert!(s.m.record().unwrap().perform);
}

#[test]
fn a_build_already_in_the_store_is_not_downloaded() {
    let mut s = Sim::new();
    s.host.builds.push(built("1.1.0", H2));
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.recorded, [Accepted, Staged, Reverify]);
}

#[test]
fn a_conflicting_build_in_the_store_fails_at_once() {
    let mut s = Sim::new();
    s.host.builds.push(built("1.1.0", H1));
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.recorded, [Accepted, Failed]);
    assert_eq!(s.error().reason, Reason::Conflict);
}

#[test]
fn refusals() {
    // Not newer.
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.0.0", true)));
    assert_eq!(s.refusal().name, NoUpdateAvailableException);
    assert!(s.recorded.is_empty());
    assert_eq!(
        s.m.status().last_refusal.unwrap().name,
        NoUpdateAvailableException
    );
    // In flight.
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)));
    s.feed(Input::Update(request("1.2.0", true)));
    assert_eq!(s.refusal().name, UpdateInProgressException);
    s.feed(Input::Rollback { keep_data: false });
    assert_eq!(s.refusal().name, UpdateInProgressException);
    // No version known.
    let mut s = Sim::new();
    s.host.current = None;
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.refusal().name, MissingVersionException);
    // Stopping.
    let mut s = Sim::new();
    s.host.stopping = true;
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.refusal().name, ServerException);
    // Nothing to roll back to.
    let mut s = Sim::new();
    s.feed(Input::Rollback { keep_data: false });
    assert_eq!(s.refusal().name, InvalidParameterException);
    // A perform nobody staged.
    let mut s = Sim::new();
    s.feed(Input::AgentPerform {
        signature: H2.into(),
    });
    assert_eq!(s.refusal().name, InvalidParameterException);
}

#[test]
fn quarantine_refuses_until_forced() {
    let mut s = Sim::new();
    s.m.quarantine
        .add("1.1.0", now_rfc3339(), "health-gate: bad");
    s.feed(Input::Update(request("1.1.0", true)));
    let r = s.refusal();
    assert_eq!(r.name, NoUpdateAvailableException);
    assert!(r.message.contains("quarantined"), "{}", r.message);
    let mut forced = request("1.1.0", true);
    forced.force = true;
    s.feed(Input::Update(forced))
        .staged()
        .reverified()
        .tasks()
        .snapshot(Ok(()))
        .gate(Ok(()));
    assert_eq!(s.step(), Updated);
    assert!(s.m.quarantine().get("1.1.0").is_none(), "forcing clears it");
}

#[test]
fn the_agents_stage_and_perform() {
    let mut s = Sim::new();
    let stage = || Input::AgentStage {
        location: Source::parse("http://127.0.0.1:1/x.tar").unwrap(),
        signature: H2.into(),
        version: None,
    };
    s.feed(stage());
    assert_eq!(s.answer, Some(Ok(())));
    assert_eq!(s.m.record().unwrap().origin, Origin::Agent);
    // Asked again: the same answer, no second update.
    s.feed(stage());
    assert_eq!(s.recorded, [Accepted, Downloading]);
    // Perform while downloading: remembered (the record is amended).
    s.feed(Input::AgentPerform {
        signature: H2.into(),
    });
    assert_eq!(s.recorded, [Accepted, Downloading, Downloading]);
    assert!(s.m.record().unwrap().perform);
    // The version is learned with the download.
    let Work::Download { id, mut target, .. } = s.take_work() else {
        panic!()
    };
    target.version = "1.1.0".into();
    s.host.builds.push(built("1.1.0", H2));
    s.feed(Input::Report(Report::Staged {
        id,
        result: Ok(target),
    }));
    assert_eq!(s.step(), Reverify, "performs once staged");
    s.reverified().tasks().snapshot(Ok(())).gate(Ok(()));
    assert_eq!(s.step(), Updated);
    // A late repeat of the same calls gets the same answer.
    s.feed(stage());
    assert_eq!(s.answer, Some(Ok(())));
    s.feed(Input::AgentPerform {
        signature: H2.into(),
    });
    assert_eq!(s.answer, Some(Ok(())));
    assert_eq!(s.step(), Updated);
}

#[test]
fn a_staged_agent_update_that_is_not_newer_fails() {
    let mut s = Sim::new();
    s.feed(Input::AgentStage {
        location: Source::parse("http://127.0.0.1:1/x.tar").unwrap(),
        signature: H2.into(),
        version: None,
    });
    let Work::Download { id, mut target, .. } = s.take_work() else {
        panic!()
    };
    target.version = "0.9.0".into();
    s.feed(Input::Report(Report::Staged {
        id,
        result: Ok(target),
    }));
    assert_eq!(s.step(), Failed);
    assert_eq!(s.error().reason, Reason::Refused);
    assert_eq!(s.error().name, NoUpdateAvailableException);
}

#[test]
fn failures_before_the_switch_end_failed_with_the_agent_running() {
    type Case = (&'static str, fn(&mut Sim), Reason);
    let cases: [Case; 4] = [
        (
            "download",
            |s| {
                let id = s.id();
                s.take_work();
                s.feed(Input::Report(Report::Staged {
                    id,
                    result: Err(Failure::new(ClientException, Reason::Download, "HTTP 404")),
                }));
            },
            Reason::Download,
        ),
        (
            "reverify",
            |s| {
                s.staged();
                let id = s.id();
                s.take_work();
                s.feed(reverified_report(
                    id,
                    Err(Failure::new(ClientException, Reason::Verify, "changed")),
                    None,
                ));
                assert!(s.did(&Effect::RemoveBuild("1.1.0".into())));
            },
            Reason::Verify,
        ),
        (
            "tasks",
            |s| {
                s.staged().reverified();
                let id = s.id();
                s.take_work();
                s.feed(Input::Report(Report::Tasks {
                    id,
                    result: Err("connection refused".into()),
                }));
            },
            Reason::RecordTasks,
        ),
        (
            "panic",
            |s| {
                let id = s.id();
                s.take_work();
                s.feed(Input::Report(Report::Panicked {
                    id: Some(id),
                    work: "download",
                    message: "overflow".into(),
                }));
            },
            Reason::Panic,
        ),
    ];
    for (name, run, reason) in cases {
        let mut s = Sim::new();
        s.feed(Input::Update(request("1.1.0", true)));
        run(&mut s);
        assert_eq!(s.step(), Failed, "{name}");
        assert_eq!(s.error().reason, reason, "{name}");
        assert!(s.did(&Effect::RemovePartial("1.1.0".into())), "{name}");
        assert!(s.did(&Effect::EnsureAgent), "{name}");
        assert!(
            !s.did(&Effect::StopAgent),
            "{name}: the agent was never stopped"
        );
        assert!(
            s.m.quarantine().get("1.1.0").is_none(),
            "{name}: not quarantined"
        );
        assert_eq!(s.host.current.as_deref(), Some("1.0.0"), "{name}");
    }
}

const ROLLBACK: [Step; 6] = [
    RollbackStop,
    RollbackSwitch,
    RollbackRestore,
    RollbackStart,
    RollbackGate,
    Failed,
];

/// A failed update after the switch: rolled back to 1.0.0 (its data
/// snapshot restored), FAILED, quarantined, `previous` as before.
fn assert_rolled_back(s: &mut Sim, reason: Reason) {
    s.restored();
    assert_rolled_back_keeping_data(s, reason);
}

/// ... without a snapshot to restore.
fn assert_rolled_back_keeping_data(s: &mut Sim, reason: Reason) {
    s.gate(Ok(()));
    let tail = &s.recorded[s.recorded.len() - ROLLBACK.len()..];
    assert_eq!(tail, ROLLBACK, "{:?}", s.recorded);
    assert_eq!(s.error().reason, reason);
    assert_eq!(s.host.current.as_deref(), Some("1.0.0"));
    assert_eq!(s.host.previous, None, "previous is what it was before");
    assert!(s.m.quarantine().get("1.1.0").is_some());
    assert!(matches!(s.done.last(), Some(Effect::Housekeeping)));
    assert_eq!(s.m.status().counters.updates.failed, 1);
}

#[test]
fn a_failed_gate_rolls_back() {
    let mut s = Sim::new();
    s.up_to_gate().gate(Err("not healthy".into()));
    assert_rolled_back(&mut s, Reason::HealthGate);
}

#[test]
fn a_crash_during_the_gate_rolls_back() {
    let mut s = Sim::new();
    s.up_to_gate();
    s.host.running = false;
    s.feed(Input::AgentExited(Ended::Code(1)));
    // The gate's late report belongs to an older run: ignored.
    s.take_work();
    assert_rolled_back(&mut s, Reason::Crash);
}

#[test]
fn a_failed_snapshot_rolls_back() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)))
        .staged()
        .reverified()
        .tasks()
        .snapshot(Err("no space".into()));
    assert!(!s.work.iter().any(|w| matches!(w, Work::Restore { .. })));
    assert_rolled_back_keeping_data(&mut s, Reason::Snapshot);
}

#[test]
fn a_rollback_never_restores_a_snapshot_another_update_took() {
    let mut s = Sim::new();
    s.host
        .snapshots
        .push(("1.0.0".into(), "an-earlier-update".into()));
    s.feed(Input::Update(request("1.1.0", true)))
        .staged()
        .reverified()
        .tasks()
        .snapshot(Err("no space".into()));
    assert!(!s.work.iter().any(|w| matches!(w, Work::Restore { .. })));
    assert_rolled_back_keeping_data(&mut s, Reason::Snapshot);
}

#[test]
fn a_failed_switch_rolls_back() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)))
        .staged()
        .reverified()
        .tasks();
    s.switch_fails = true;
    s.snapshot(Ok(()));
    assert_rolled_back(&mut s, Reason::Switch);
}

#[test]
fn a_build_that_cannot_start_rolls_back() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)))
        .staged()
        .reverified()
        .tasks();
    s.start_fails = true;
    s.snapshot(Ok(()));
    assert!(s.did(&Effect::SyncStore));
    assert_rolled_back(&mut s, Reason::Start);
}

#[test]
fn a_rollback_that_fails_too_says_so_and_keeps_an_agent() {
    let mut s = Sim::new();
    s.up_to_gate().gate(Err("not healthy".into()));
    s.restored().gate(Err("still not".into()));
    assert_eq!(s.step(), Failed);
    let e = s.error();
    assert!(e.message.contains("not healthy"), "{}", e.message);
    assert!(
        e.message.contains("not healthy either: still not"),
        "{}",
        e.message
    );
    assert!(s.did(&Effect::EnsureAgent), "{:?}", s.done);
}

#[test]
fn a_switch_back_that_fails_ends_failed_with_an_agent_started() {
    let mut s = Sim::new();
    s.up_to_gate();
    s.switch_fails = true;
    s.gate(Err("not healthy".into()));
    assert_eq!(s.step(), Failed);
    assert!(s.error().message.contains("could not switch back to 1.0.0"));
    assert!(s.did(&Effect::EnsureAgent));
    assert!(s.host.running, "an agent runs (the build current names)");
}

#[test]
fn a_crash_of_the_old_build_during_the_rollback_gate() {
    let mut s = Sim::new();
    s.up_to_gate().gate(Err("bad".into())).restored();
    s.host.running = false;
    s.feed(Input::AgentExited(Ended::Signal(9)));
    assert_eq!(s.step(), Failed);
    assert!(s.did(&Effect::RestartLater));
    assert!(s.error().message.contains("was killed by SIGKILL"));
}

#[test]
fn an_operator_rollback_swaps_current_and_previous() {
    let mut s = Sim::new();
    s.up_to_gate().gate(Ok(()));
    s.recorded.clear();
    s.host.snapshots = vec![("1.0.0".into(), "an-earlier-update".into())];
    s.feed(Input::Rollback { keep_data: false });
    assert_eq!(s.answer, Some(Ok(())));
    s.tasks().restored().gate(Ok(()));
    assert_eq!(
        s.recorded,
        [
            Accepted,
            RecordTasks,
            RollbackStop,
            RollbackSwitch,
            RollbackRestore,
            RollbackStart,
            RollbackGate,
            Updated
        ]
    );
    assert_eq!(s.host.current.as_deref(), Some("1.0.0"));
    assert_eq!(s.host.previous.as_deref(), Some("1.1.0"));
    assert!(s.m.quarantine().get("1.1.0").is_some(), "the build left");
}

#[test]
fn an_operator_rollback_keeping_data_restores_nothing() {
    let mut s = Sim::new();
    s.up_to_gate().gate(Ok(()));
    s.host.snapshots = vec![("1.0.0".into(), "an-earlier-update".into())];
    s.feed(Input::Rollback { keep_data: true });
    s.tasks().gate(Ok(()));
    assert_eq!(s.step(), Updated);
    assert!(!s
        .done
        .iter()
        .any(|e| matches!(e, Effect::Work(Work::Restore { .. }))));
}

#[test]
fn stale_reports_are_ignored() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)));
    let before = s.recorded.len();
    s.feed(Input::Report(Report::Staged {
        id: "another".into(),
        result: Ok(target("1.1.0", H2)),
    }));
    s.feed(reverified_report(s.id(), Ok(()), None));
    s.feed(Input::AgentStopped);
    s.feed(Input::Switched);
    assert_eq!(s.recorded.len(), before);
    assert_eq!(s.step(), Downloading);
    // A gate report of an earlier run.
    let mut s = Sim::new();
    s.up_to_gate();
    let Work::Gate { id, seq, .. } = s.take_work() else {
        panic!()
    };
    s.feed(Input::Report(Report::Gate {
        id,
        seq: seq - 1,
        result: Err("old".into()),
    }));
    assert_eq!(s.step(), HealthGate);
}

// ----- exit 42 ---------------------------------------------------------------

#[test]
fn exit_42_without_a_staged_update_restarts_the_agent() {
    let mut s = Sim::new();
    s.host.running = false;
    s.feed(Input::Exit42);
    assert_eq!(s.done, [Effect::StartAgent]);
}

#[test]
fn exit_42_with_a_staged_update_performs_it() {
    let mut s = Sim::new();
    s.host.running = false;
    s.host.desired = true;
    s.feed(Input::Exit42);
    assert_eq!(s.take_work(), Work::DesiredImage { perform: true });
    s.feed(desired_image_1_1_0(true));
    assert_eq!(s.m.record().unwrap().origin, Origin::Exit42);
    assert!(s.m.record().unwrap().perform);
    assert_eq!(s.recorded, [Accepted, Downloading]);
}

#[test]
fn exit_42_with_a_refused_or_broken_update_restarts_the_agent() {
    for result in [
        Ok(Some(target("0.9.0", H2))),
        Err("not an image".to_string()),
    ] {
        let mut s = Sim::new();
        s.host.running = false;
        s.feed(Input::Report(Report::DesiredImage {
            perform: true,
            result,
        }));
        assert_eq!(s.done, [Effect::ConsumeDesiredImage, Effect::StartAgent]);
        assert!(s.m.record().is_none());
    }
    // Its check panicked: the same.
    let mut s = Sim::new();
    s.host.running = false;
    s.feed(Input::Report(Report::Panicked {
        id: None,
        work: "exit-42",
        message: "boom".into(),
    }));
    assert_eq!(s.done, [Effect::ConsumeDesiredImage, Effect::StartAgent]);
}

// ----- the journal cannot be written -------------------------------------------

#[test]
fn a_request_whose_first_record_fails_is_refused_as_if_it_never_came() {
    let mut s = Sim::new();
    s.unwritable = Some(None);
    s.feed(Input::Update(request("1.1.0", true)));
    let r = s.refusal();
    assert_eq!(r.name, ServerException);
    assert!(r.message.contains("ENOSPC"), "{}", r.message);
    assert!(s.m.record().is_none(), "no phantom PENDING");
    s.unwritable = None;
    s.feed(Input::Update(request("1.1.0", true)));
    assert_eq!(s.answer, Some(Ok(())));
}

#[test]
fn an_unrecorded_step_stops_the_update_and_keeps_the_agent() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)))
        .staged()
        .reverified()
        .tasks();
    s.unwritable = Some(Some(HealthGate));
    s.snapshot(Ok(()));
    let rec = s.m.record().unwrap().clone();
    assert_eq!(rec.step, Failed, "FAILED in memory");
    assert_eq!(rec.error.unwrap().reason, Reason::Journal);
    assert!(s.host.running, "the new build keeps running");
    assert_eq!(
        s.done.iter().filter(|e| **e == Effect::StopAgent).count(),
        1,
        "only the old agent was stopped"
    );
    assert!(s.did(&Effect::RetryJournalIn(JOURNAL_RETRY_MIN)));
    // The retry fails again: a longer wait; then it works.
    s.unwritable = Some(None);
    s.feed(Input::RetryJournal);
    assert!(s.did(&Effect::RetryJournalIn(JOURNAL_RETRY_MIN * 2)));
    s.unwritable = None;
    s.feed(Input::RetryJournal);
    assert_eq!(s.recorded.last(), Some(&Failed));
    assert!(matches!(s.done.last(), Some(Effect::Housekeeping)));
    // No retry is pending now.
    let n = s.done.len();
    s.feed(Input::RetryJournal);
    assert_eq!(s.done.len(), n);
}

#[test]
fn an_unrecorded_rollback_never_stops_the_agent() {
    let mut s = Sim::new();
    s.up_to_gate();
    s.unwritable = Some(None);
    s.gate(Err("bad".into()));
    assert_eq!(s.step(), Failed);
    assert!(s.host.running);
    assert_eq!(
        s.done.iter().filter(|e| **e == Effect::StopAgent).count(),
        1
    );
    let e = s.error();
    assert_eq!(e.reason, Reason::Journal);
    assert!(e.message.contains("rollback-stop"), "{}", e.message);
    assert!(e.message.contains("health-gate: bad"), "{}", e.message);
}

#[test]
fn a_new_request_replaces_a_pending_retry() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", true)));
    s.unwritable = Some(Some(Staged));
    s.staged();
    assert_eq!(s.step(), Failed);
    s.unwritable = None;
    s.feed(Input::Update(request("1.2.0", true)));
    assert_eq!(s.answer, Some(Ok(())));
    assert_eq!(s.m.record().unwrap().target.version, "1.2.0");
    let n = s.done.len();
    s.feed(Input::RetryJournal);
    assert_eq!(s.done.len(), n, "the old retry is moot");
}

// ----- recovery: one case per crash-matrix point --------------------------------

/// A journal record of an update 1.0.0 -> 1.1.0 at `step`.
fn at(step: Step, origin: Origin) -> Record {
    let mut r = Record::new(origin, target("1.1.0", H2), "m".into(), true);
    r.step = step;
    r.previous_version = Some("1.0.0".into());
    r.attempts = 1;
    r
}

/// A sim recovering `rec` on a host whose agent is down (a warden start)
/// with 1.1.0 in the store, `current` at `current` and data snapshots of
/// `snapshots` (taken by this update).
fn recovering(rec: Record, current: &str, snapshots: &[&str]) -> Sim {
    let id = rec.id.clone();
    let mut s = Sim::with(Some(rec));
    s.host.builds.push(built("1.1.0", H2));
    s.host.current = Some(current.into());
    s.host.snapshots = snapshots
        .iter()
        .map(|v| (v.to_string(), id.clone()))
        .collect();
    s.host.running = false;
    s.feed(Input::Recovered);
    s
}

#[test]
fn recover_after_pending_and_mid_download() {
    for step in [Accepted, Downloading] {
        let mut rec = at(step, Origin::Cli);
        rec.attempts = 0;
        let mut s = Sim::with(Some(rec));
        s.host.running = false;
        s.feed(Input::Recovered);
        assert!(s.did(&Effect::EnsureAgent), "{step:?}");
        assert_eq!(s.recorded, [Downloading], "{step:?}");
        assert!(matches!(s.work[0], Work::Download { .. }));
    }
}

#[test]
fn recover_after_staged() {
    let mut rec = at(Staged, Origin::Cli);
    rec.attempts = 0;
    let s = recovering(rec, "1.0.0", &[]);
    assert!(s.did(&Effect::EnsureAgent));
    assert_eq!(s.recorded, [Reverify]);
    // Without perform it waits.
    let mut rec = at(Staged, Origin::Cli);
    rec.perform = false;
    let s = recovering(rec, "1.0.0", &[]);
    assert!(s.recorded.is_empty());
}

#[test]
fn recover_after_stop_old_and_after_snapshot_takes_the_snapshot_again() {
    for point in ["after-stop-old", "after-snapshot"] {
        let mut s = recovering(at(StopOld, Origin::Cli), "1.0.0", &[]);
        assert!(
            !s.did(&Effect::EnsureAgent),
            "{point}: the old agent stays down"
        );
        s.snapshot(Ok(()));
        assert_eq!(s.host.current.as_deref(), Some("1.1.0"), "{point}");
        assert_eq!(s.recorded, [HealthGate], "{point}");
        s.gate(Ok(()));
        assert_eq!(s.step(), Updated, "{point}");
    }
}

#[test]
fn recover_after_switch_after_start_and_during_gate_starts_the_new_build() {
    for (point, step) in [
        ("after-switch", StopOld),
        ("after-start-new", StopOld),
        ("during-gate", HealthGate),
    ] {
        let mut s = recovering(at(step, Origin::Cli), "1.1.0", &[]);
        assert!(s.did(&Effect::StartAgent), "{point}");
        assert_eq!(s.recorded, [HealthGate], "{point}");
        assert_eq!(s.m.record().unwrap().attempts, 2, "{point}");
        s.gate(Ok(()));
        assert_eq!(s.step(), Updated, "{point}");
    }
}

#[test]
fn recover_a_third_time_during_the_gate_rolls_back() {
    let mut rec = at(HealthGate, Origin::Cli);
    rec.attempts = MAX_ATTEMPTS;
    let mut s = recovering(rec, "1.1.0", &["1.0.0"]);
    assert_rolled_back(&mut s, Reason::Interrupted);
}

#[test]
fn recover_during_rollback() {
    for step in [RollbackStop, RollbackSwitch, RollbackRestore] {
        let mut rec = at(step, Origin::Cli);
        rec.error = Some(Failure::new(ServerException, Reason::HealthGate, "bad"));
        let mut s = recovering(rec, "1.1.0", &["1.0.0"]);
        assert_eq!(s.recorded[0], RollbackSwitch, "{step:?}");
        s.restored().gate(Ok(()));
        assert_eq!(s.step(), Failed, "{step:?}");
        assert_eq!(s.host.current.as_deref(), Some("1.0.0"), "{step:?}");
        assert!(s.m.quarantine().get("1.1.0").is_some(), "{step:?}");
    }
}

#[test]
fn recover_after_rollback_start_and_during_rollback_gate() {
    for step in [RollbackStart, RollbackGate] {
        let mut rec = at(step, Origin::Cli);
        rec.error = Some(Failure::new(ServerException, Reason::HealthGate, "bad"));
        let mut s = recovering(rec, "1.0.0", &[]);
        assert_eq!(s.recorded, [RollbackStart, RollbackGate], "{step:?}");
        assert!(s.did(&Effect::StartAgent));
        s.gate(Ok(()));
        assert_eq!(s.step(), Failed, "{step:?}");
    }
}

#[test]
fn recover_an_operator_rollback() {
    for (step, current) in [
        (RollbackSwitch, "1.1.0"),
        (RollbackStart, "1.0.0"),
        (RollbackGate, "1.0.0"),
    ] {
        let mut rec = Record::new(
            Origin::Rollback,
            target("1.0.0", H1),
            "rollback".into(),
            true,
        );
        rec.step = step;
        rec.previous_version = Some("1.1.0".into());
        let mut s = Sim::with(Some(rec));
        s.host.builds.push(built("1.1.0", H2));
        s.host.current = Some(current.into());
        s.host.previous = Some("1.1.0".into()).filter(|_| current == "1.0.0");
        s.host.snapshots = vec![("1.0.0".into(), "an-earlier-update".into())];
        s.host.running = false;
        s.feed(Input::Recovered);
        if step == RollbackSwitch {
            s.restored();
        }
        s.gate(Ok(()));
        assert_eq!(s.step(), Updated, "{step:?}");
        assert_eq!(s.host.current.as_deref(), Some("1.0.0"), "{step:?}");
        assert_eq!(s.host.previous.as_deref(), Some("1.1.0"), "{step:?}");
    }
}

#[test]
fn recover_an_operator_rollback_before_the_stop() {
    let mut rec = Record::new(
        Origin::Rollback,
        target("1.0.0", H1),
        "rollback".into(),
        true,
    );
    rec.step = RecordTasks;
    rec.attempts = 1;
    let mut s = recovering(rec, "1.1.0", &[]);
    assert!(s.did(&Effect::EnsureAgent));
    assert_eq!(s.recorded, [RecordTasks]);
    s.tasks();
    assert_eq!(s.recorded[1], RollbackStop);
}

#[test]
fn nothing_to_recover_is_housekeeping() {
    let mut s = Sim::new();
    s.feed(Input::Recovered);
    assert_eq!(s.done, [Effect::Housekeeping]);
    let mut done = at(Updated, Origin::Cli);
    done.step = Updated;
    let mut s = Sim::with(Some(done));
    s.feed(Input::Recovered);
    assert_eq!(s.done, [Effect::Housekeeping]);
}

#[test]
fn steps_round_trip_through_the_journal_format() {
    for step in Step::ALL {
        let mut r = at(step, Origin::Cli);
        r.step = step;
        let text = serde_json::to_string(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["state"], step.state().as_str());
        assert_eq!(v["step"], step.as_str());
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back.step, step);
    }
    let bad = serde_json::to_string(&at(Staged, Origin::Cli))
        .unwrap()
        .replace("\"STAGED\"", "\"UPDATING\"");
    assert!(serde_json::from_str::<Record>(&bad).is_err());
}

// ----- the agent stages, then exits 42 --------------------------------------------

#[test]
fn the_agent_downloading_shows_as_staging() {
    let mut s = Sim::new();
    s.feed(Input::CacheFile("0a1b.ecs-update.tar".into()));
    assert_eq!(s.m.ecs_state(), Some(State::Staging));
    assert!(s.done.is_empty(), "nothing recorded: the agent downloads");
    assert_eq!(
        s.m.status().agent_staging.unwrap().file,
        "0a1b.ecs-update.tar"
    );
    // Another file going is no news; this one going ends the STAGING.
    s.feed(Input::CacheFileGone("ffff.ecs-update.tar".into()));
    assert_eq!(s.m.ecs_state(), Some(State::Staging));
    s.feed(Input::CacheFileGone("0a1b.ecs-update.tar".into()));
    assert_eq!(s.m.ecs_state(), None);
    assert!(s.m.status().agent_staging.is_none());
    assert!(s.done.is_empty());
}

#[test]
fn an_update_staged_by_the_agent_is_taken_in_then_performed_on_exit_42() {
    let mut s = Sim::new();
    s.feed(Input::CacheFile("desired-image".into()));
    assert_eq!(s.take_work(), Work::DesiredImage { perform: false });
    s.feed(desired_image_1_1_0(false));
    assert_eq!(s.m.record().unwrap().origin, Origin::Exit42);
    s.staged();
    assert_eq!(s.step(), Staged, "waits for the agent's perform");
    assert!(s.m.status().agent_staging.is_none());
    // The agent exits 42: the tasks come from the engine (it is down).
    s.host.running = false;
    s.feed(Input::Exit42);
    assert_eq!(s.step(), Reverify);
    s.reverified();
    assert!(matches!(
        s.work[0],
        Work::RecordTasks {
            from_engine: true,
            ..
        }
    ));
    s.tasks().snapshot(Ok(()));
    let Work::Gate { check_engine, .. } = &s.work[0] else {
        panic!("{:?}", s.work)
    };
    assert!(*check_engine, "the gate checks the engine's containers");
    s.gate(Ok(()));
    assert_eq!(s.step(), Updated);
}

#[test]
fn exit_42_during_the_agents_staging_performs_when_staged() {
    let mut s = Sim::new();
    s.feed(desired_image_1_1_0(false));
    s.host.running = false;
    s.feed(Input::Exit42);
    assert!(s.m.record().unwrap().perform, "remembered");
    // The exit-42 check of the same file changes nothing.
    s.feed(desired_image_1_1_0(true));
    s.staged();
    assert_eq!(s.step(), Reverify);
}

#[test]
fn a_staged_update_that_is_refused_is_noted_and_the_agent_left_alone() {
    let mut s = Sim::new();
    s.m.quarantine.add("1.1.0", now_rfc3339(), "crash");
    s.feed(desired_image_1_1_0(false));
    assert!(s.m.record().is_none());
    assert!(s.done.is_empty(), "the running agent is not touched");
    let r = s.m.status().last_refusal.unwrap();
    assert_eq!(r.name, NoUpdateAvailableException);
}

/// A seal to hand back in reports (any file's will do: the machine only
/// passes it on).
fn a_seal() -> Seal {
    Seal::of(&std::fs::metadata("/").unwrap())
}

/// The agent staged 1.1.0 and the build is in the store: the early hash
/// has been handed out.
fn agent_staged_sim() -> Sim {
    let mut s = Sim::new();
    s.feed(desired_image_1_1_0(false));
    s.staged();
    assert_eq!(s.step(), Staged);
    s
}

#[test]
fn an_agent_staged_build_is_hashed_while_the_old_agent_runs() {
    let mut s = agent_staged_sim();
    let Work::Reverify { id, seal: None, .. } = s.take_work() else {
        panic!("no early hash: {:?}", s.work)
    };
    let recorded = s.recorded.len();
    s.feed(reverified_report(id, Ok(()), Some(a_seal())));
    assert_eq!(s.step(), Staged, "still waiting for the agent's exit 42");
    assert_eq!(s.recorded.len(), recorded, "nothing recorded");
    assert!(!s.did(&Effect::StopAgent), "the agent is not touched");
    // Exit 42: the reverify only checks the seal.
    s.host.running = false;
    s.feed(Input::Exit42);
    assert_eq!(s.step(), Reverify);
    let Work::Reverify { seal, .. } = &s.work[0] else {
        panic!("{:?}", s.work)
    };
    assert_eq!(*seal, Some(a_seal()));
    s.reverified();
    assert_eq!(s.step(), RecordTasks);
}

#[test]
fn an_early_hash_still_running_at_exit_42_stands_for_the_reverify() {
    let mut s = agent_staged_sim();
    s.host.running = false;
    s.feed(Input::Exit42);
    assert_eq!(s.step(), Reverify);
    assert_eq!(s.work.len(), 1, "no second hash: {:?}", s.work);
    s.reverified(); // the early one
    assert_eq!(s.step(), RecordTasks);
}

#[test]
fn an_early_hash_done_before_the_reverify_is_durable_is_kept_for_it() {
    let mut s = agent_staged_sim();
    let Work::Reverify { id, .. } = s.take_work() else {
        panic!()
    };
    s.host.running = false;
    // Exit 42: the reverify's record goes out, not yet written...
    let fx = s.m.handle(Input::Exit42, &s.host);
    assert!(matches!(fx.last(), Some(Effect::Record(r)) if r.step == Reverify));
    // ...when the early hash reports: nothing may happen yet.
    let fx =
        s.m.handle(reverified_report(id, Ok(()), Some(a_seal())), &s.host);
    assert!(fx.is_empty(), "{fx:?}");
    // Written: the reverify checks the seal.
    s.feed(Input::Recorded);
    let Work::Reverify { seal, .. } = &s.work[0] else {
        panic!("{:?}", s.work)
    };
    assert_eq!(*seal, Some(a_seal()));
}

#[test]
fn an_early_hash_that_fails_fails_the_update_at_exit_42() {
    let mut s = agent_staged_sim();
    let Work::Reverify { id, .. } = s.take_work() else {
        panic!()
    };
    s.feed(reverified_report(
        id,
        Err(Failure::new(ClientException, Reason::Verify, "changed")),
        None,
    ));
    assert_eq!(s.step(), Staged, "the running agent is left alone");
    s.host.running = false;
    s.feed(Input::Exit42);
    assert!(s.work.is_empty(), "not hashed again: {:?}", s.work);
    assert!(s.did(&Effect::RemoveBuild("1.1.0".into())));
    assert_eq!(s.step(), Failed);
    assert_eq!(s.error().reason, Reason::Verify);
}

#[test]
fn an_early_hash_whose_file_changed_meanwhile_is_done_again_in_full() {
    let mut s = agent_staged_sim();
    let Work::Reverify { id, .. } = s.take_work() else {
        panic!()
    };
    // Passed, but the file changed while it was read: no seal.
    s.feed(reverified_report(id, Ok(()), None));
    s.host.running = false;
    s.feed(Input::Exit42);
    assert!(matches!(s.work[0], Work::Reverify { seal: None, .. }));
}

#[test]
fn an_update_staged_by_the_cli_is_not_hashed_early() {
    let mut s = Sim::new();
    s.feed(Input::Update(request("1.1.0", false))).staged();
    assert_eq!(s.step(), Staged);
    assert!(s.work.is_empty(), "{:?}", s.work);
}
