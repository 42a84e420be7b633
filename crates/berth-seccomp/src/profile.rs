//! A validated, backend-neutral form of an OCI `linux.seccomp` profile.
//!
//! Everything the runtime spec leaves to the runtime (which errno `SCMP_ACT_ERRNO`
//! returns without `errnoRet`, what `SCMP_ACT_KILL` means, which rules are no-ops) is
//! decided here once, so every backend compiles the same semantics.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::Error;

/// What the kernel does when a rule (or the default) matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `SCMP_ACT_KILL` and `SCMP_ACT_KILL_THREAD`: kill the calling thread.
    KillThread,
    /// `SCMP_ACT_KILL_PROCESS`: kill the whole process.
    KillProcess,
    /// `SCMP_ACT_TRAP`: deliver SIGSYS.
    Trap,
    /// `SCMP_ACT_ERRNO`: fail the call with this errno.
    Errno(u16),
    /// `SCMP_ACT_TRACE`: hand the call to a ptrace tracer with this message
    /// (without a tracer the call fails with ENOSYS).
    Trace(u16),
    /// `SCMP_ACT_ALLOW`.
    Allow,
    /// `SCMP_ACT_LOG`: allow and log.
    Log,
    /// `SCMP_ACT_NOTIFY`: ask the seccomp agent holding the listener fd.
    Notify,
}

/// Comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `SCMP_CMP_NE`
    Ne,
    /// `SCMP_CMP_LT`
    Lt,
    /// `SCMP_CMP_LE`
    Le,
    /// `SCMP_CMP_EQ`
    Eq,
    /// `SCMP_CMP_GE`
    Ge,
    /// `SCMP_CMP_GT`
    Gt,
    /// `SCMP_CMP_MASKED_EQ`: `(arg & mask) == value`.
    MaskedEq {
        /// The mask (the spec's `value`).
        mask: u64,
    },
}

/// One argument condition: `arg[index] <op> value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgCond {
    /// Argument index, 0 to 5.
    pub index: u8,
    /// The comparison.
    pub op: CmpOp,
    /// Right-hand value (for `MaskedEq`, the spec's `valueTwo`).
    pub value: u64,
}

/// One syscall rule. Conditions in one rule must all hold (AND), as in runc, unless
/// two conditions test the same argument: then each condition is its own rule (OR),
/// which is how runc reads such profiles too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Syscall names (names the backend does not know are skipped with a warning).
    pub names: Vec<String>,
    /// What happens when the rule matches.
    pub action: Action,
    /// Argument conditions.
    pub args: Vec<ArgCond>,
}

impl Rule {
    /// Condition groups to add as separate backend rules (see the type's doc).
    pub fn condition_groups(&self) -> Vec<Vec<ArgCond>> {
        let mut seen = [false; 6];
        let repeated = self.args.iter().any(|c| {
            let i = usize::from(c.index);
            std::mem::replace(&mut seen[i], true)
        });
        if repeated {
            self.args.iter().map(|c| vec![*c]).collect()
        } else {
            vec![self.args.clone()]
        }
    }
}

/// Kernel filter flags (`SECCOMP_FILTER_FLAG_*`) requested by the profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `SECCOMP_FILTER_FLAG_TSYNC`
    pub tsync: bool,
    /// `SECCOMP_FILTER_FLAG_LOG`
    pub log: bool,
    /// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`
    pub spec_allow: bool,
    /// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`
    pub wait_killable_recv: bool,
}

/// A profile checked against the runtime spec, ready for a [`crate::Backend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Action for syscalls no rule matches.
    pub default_action: Action,
    /// Extra architectures (the native one is always included).
    pub architectures: Vec<Arch>,
    /// Kernel flags.
    pub flags: Flags,
    /// Rules in profile order, minus those whose action equals the default.
    pub rules: Vec<Rule>,
}

const DEFAULT_ERRNO: u16 = libc::EPERM as u16;

fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    errno_field: &str,
) -> Result<Action, Error> {
    let errno = |what: &str| -> Result<u16, Error> {
        match errno_ret {
            None => Ok(DEFAULT_ERRNO),
            Some(v) => u16::try_from(v).map_err(|_| {
                Error::invalid(
                    errno_field,
                    v,
                    format!("{what} return value must fit in 16 bits (0 to 65535)"),
                )
            }),
        }
    };
    let needs_no_errno = |a: Action| -> Result<Action, Error> {
        match errno_ret {
            None => Ok(a),
            Some(v) => Err(Error::invalid(
                errno_field,
                v,
                format!(
                    "errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {}",
                    action_name(action)
                ),
            )),
        }
    };
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            needs_no_errno(Action::KillThread)
        }
        LinuxSeccompAction::ScmpActKillProcess => needs_no_errno(Action::KillProcess),
        LinuxSeccompAction::ScmpActTrap => needs_no_errno(Action::Trap),
        LinuxSeccompAction::ScmpActErrno => Ok(Action::Errno(errno("errno")?)),
        LinuxSeccompAction::ScmpActTrace => Ok(Action::Trace(errno("trace")?)),
        LinuxSeccompAction::ScmpActAllow => needs_no_errno(Action::Allow),
        LinuxSeccompAction::ScmpActLog => needs_no_errno(Action::Log),
        LinuxSeccompAction::ScmpActNotify => needs_no_errno(Action::Notify),
    }
}

/// The spec's spelling of an action, for messages.
pub(crate) fn action_name(a: LinuxSeccompAction) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{a:?}"))
}

impl Profile {
    /// Checks an OCI profile and resolves the runtime-defined defaults.
    ///
    /// Errors name the field and value: an errnoRet that does not fit in 16 bits or that
    /// is given with an action other than ERRNO/TRACE, an argument index above 5,
    /// `SCMP_ACT_NOTIFY` as the default action, `SCMP_ACT_NOTIFY` rules without a
    /// `listenerPath`, a rule without names.
    pub fn from_oci(spec: &LinuxSeccomp) -> Result<Profile, Error> {
        const P: &str = "linux.seccomp";
        let default_action = action(
            spec.default_action(),
            spec.default_errno_ret(),
            &format!("{P}.defaultErrnoRet"),
        )?;
        if default_action == Action::Notify {
            return Err(Error::invalid(
                format!("{P}.defaultAction"),
                "SCMP_ACT_NOTIFY",
                "the notify action cannot be the default action (every syscall, including the runtime's own, would wait for the agent)",
            ));
        }

        let mut architectures = Vec::new();
        for arch in spec.architectures().iter().flatten() {
            if *arch != Arch::ScmpArchNative && !architectures.contains(arch) {
                architectures.push(*arch);
            }
        }

        let mut flags = Flags::default();
        for flag in spec.flags().iter().flatten() {
            match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => flags.tsync = true,
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags.log = true,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => flags.spec_allow = true,
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    flags.wait_killable_recv = true
                }
            }
        }

        let mut rules = Vec::new();
        for (i, sc) in spec.syscalls().iter().flatten().enumerate() {
            let field = format!("{P}.syscalls[{i}]");
            if sc.names().is_empty() {
                return Err(Error::invalid(
                    format!("{field}.names"),
                    "[]",
                    "a syscall rule needs at least one name",
                ));
            }
            if let Some(bad) = sc.names().iter().find(|n| n.is_empty() || n.contains('\0')) {
                return Err(Error::invalid(
                    format!("{field}.names"),
                    format!("{bad:?}"),
                    "not a syscall name",
                ));
            }
            let act = action(sc.action(), sc.errno_ret(), &format!("{field}.errnoRet"))?;
            let mut args = Vec::new();
            for (j, a) in sc.args().iter().flatten().enumerate() {
                let afield = format!("{field}.args[{j}]");
                let index = u8::try_from(a.index())
                    .ok()
                    .filter(|i| *i < 6)
                    .ok_or_else(|| {
                        Error::invalid(
                            format!("{afield}.index"),
                            a.index(),
                            "syscalls have at most 6 arguments (index 0 to 5)",
                        )
                    })?;
                let (op, value) = match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => (CmpOp::Ne, a.value()),
                    LinuxSeccompOperator::ScmpCmpLt => (CmpOp::Lt, a.value()),
                    LinuxSeccompOperator::ScmpCmpLe => (CmpOp::Le, a.value()),
                    LinuxSeccompOperator::ScmpCmpEq => (CmpOp::Eq, a.value()),
                    LinuxSeccompOperator::ScmpCmpGe => (CmpOp::Ge, a.value()),
                    LinuxSeccompOperator::ScmpCmpGt => (CmpOp::Gt, a.value()),
                    // As in runc and libseccomp: value is the mask, valueTwo the datum.
                    LinuxSeccompOperator::ScmpCmpMaskedEq => (
                        CmpOp::MaskedEq { mask: a.value() },
                        a.value_two().unwrap_or(0),
                    ),
                };
                args.push(ArgCond { index, op, value });
            }
            if act == Action::Notify && spec.listener_path().is_none() {
                return Err(Error::invalid(
                    format!("{P}.listenerPath"),
                    "(unset)",
                    format!("{field} uses SCMP_ACT_NOTIFY, which needs a listenerPath"),
                ));
            }
            // A rule repeating the default action changes nothing; libseccomp would
            // reject it, runc drops it.
            if act == default_action {
                tracing::debug!(rule = %field, "seccomp rule has the default action, skipped");
                continue;
            }
            rules.push(Rule {
                names: sc.names().clone(),
                action: act,
                args,
            });
        }

        Ok(Profile {
            default_action,
            architectures,
            flags,
            rules,
        })
    }

    /// Whether any rule uses `SCMP_ACT_NOTIFY` (loading then yields a listener fd).
    pub fn uses_notify(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Notify)
    }
}

/// Parses a `linux.seccomp` JSON object, naming the field and value of a bad action,
/// operator, architecture or flag (serde alone only says "unknown variant").
pub fn profile_from_json(json: &[u8]) -> Result<LinuxSeccomp, Error> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(Error::Json)?;
    check_enums(&value, "linux.seccomp")?;
    serde_json::from_value(value).map_err(Error::Json)
}

/// Checks the enum-valued fields of a `linux.seccomp` JSON value, so that an unknown
/// action or operator is reported with its field path. `prefix` is the path of `value`.
pub fn check_enums(value: &serde_json::Value, prefix: &str) -> Result<(), Error> {
    fn check<T: serde::de::DeserializeOwned>(
        v: Option<&serde_json::Value>,
        field: String,
        what: &str,
    ) -> Result<(), Error> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(()),
            Some(v) => serde_json::from_value::<T>(v.clone())
                .map(|_| ())
                .map_err(|_| Error::invalid(field, v, format!("unknown {what}"))),
        }
    }
    check::<LinuxSeccompAction>(
        value.get("defaultAction"),
        format!("{prefix}.defaultAction"),
        "seccomp action",
    )?;
    for (i, a) in list(value, "architectures").iter().enumerate() {
        check::<Arch>(
            Some(a),
            format!("{prefix}.architectures[{i}]"),
            "seccomp architecture",
        )?;
    }
    for (i, f) in list(value, "flags").iter().enumerate() {
        check::<LinuxSeccompFilterFlag>(
            Some(f),
            format!("{prefix}.flags[{i}]"),
            "seccomp filter flag",
        )?;
    }
    for (i, sc) in list(value, "syscalls").iter().enumerate() {
        check::<LinuxSeccompAction>(
            sc.get("action"),
            format!("{prefix}.syscalls[{i}].action"),
            "seccomp action",
        )?;
        for (j, a) in list(sc, "args").iter().enumerate() {
            check::<LinuxSeccompOperator>(
                a.get("op"),
                format!("{prefix}.syscalls[{i}].args[{j}].op"),
                "seccomp operator",
            )?;
        }
    }
    Ok(())
}

fn list<'a>(v: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    v.get(key)
        .and_then(|l| l.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
