//! claw-agent: the agent that runs inside a group's container. See `claw::agent`.

fn main() {
    std::process::exit(claw::agent::run::main());
}
