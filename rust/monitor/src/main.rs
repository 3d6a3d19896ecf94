//! sampan-monitor: the per-container monitor of Sampan (docs/monitor.md), and, when run as
//! `docker-init`, the tiny init of `--init`. One static binary, no threads.

mod init;
mod jsonlog;
mod relay;
mod run;
mod sys;

fn main() {
    let mut args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let code = if argv0.ends_with("docker-init") {
        init::main(&args)
    } else {
        match args.first().map(String::as_str) {
            Some("run") => run::run(&args[1..]),
            Some("exec") => run::exec(&args[1..]),
            Some("init") => init::main(&args[1..]),
            _ => {
                eprintln!(
                    "usage: sampan-monitor run CDIR ID RUNTIME_ROOT FD\n       \
                     sampan-monitor exec CDIR ID RUNTIME_ROOT EXEC_ID FD\n       \
                     docker-init -- COMMAND [ARG...]"
                );
                2
            }
        }
    };
    std::process::exit(code);
}
