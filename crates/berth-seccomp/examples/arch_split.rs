//! Experiment: how long libseccomp takes per architecture when each gets its own context.
use std::time::Instant;

use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall};

fn build(arches: &[ScmpArch], names: &[String]) -> std::time::Duration {
    let t = Instant::now();
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(1)).unwrap();
    ctx.set_ctl_optimize(2).unwrap();
    let native = ScmpArch::native();
    for a in arches {
        if !ctx.is_arch_present(*a).unwrap() {
            ctx.add_arch(*a).unwrap();
        }
    }
    if !arches.contains(&native) {
        ctx.remove_arch(native).unwrap();
    }
    for n in names {
        if let Ok(s) = ScmpSyscall::from_name(n) {
            let _ = ctx.add_rule(ScmpAction::Allow, s);
        }
    }
    let rules = t.elapsed();
    let f = std::fs::File::create("/dev/null").unwrap();
    ctx.export_bpf(&f).unwrap();
    println!("  {arches:?}: rules {rules:?}, total {:?}", t.elapsed());
    t.elapsed()
}

fn main() {
    let p = berth_seccomp::default_profile();
    let names: Vec<String> = p.syscalls().as_ref().unwrap()[0].names().clone();
    for _ in 0..2 {
        build(&[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32], &names);
        build(&[ScmpArch::X8664], &names);
        build(&[ScmpArch::X86], &names);
        build(&[ScmpArch::X32], &names);
        build(&[ScmpArch::X8664, ScmpArch::X32], &names);
    }
}
