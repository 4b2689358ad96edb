# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_multipass_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_multipass_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_multipass_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_multipass_using_subcommand
    set -l cmd (__fish_multipass_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c multipass -n "__fish_multipass_needs_command" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c multipass -n "__fish_multipass_needs_command" -s V -l version -d 'Print version'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "authenticate" -d 'Authenticate this client with the multipass service'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "auth" -d 'Authenticate this client with the multipass service'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "set" -d 'Set a setting'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "get" -d 'Get a setting\'s value, or list the settings keys'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "list" -d 'List instances'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "ls" -d 'List instances'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "version" -d 'Show the versions of the client and of the daemon'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "trust" -d 'Manage trusted clients and one-time enrollment tokens'
complete -c multipass -n "__fish_multipass_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c multipass -n "__fish_multipass_using_subcommand authenticate" -l admin -d 'Trust this client through multipassd-helper instead, as an administrator (polkit asks for the administrator\'s password on a terminal)'
complete -c multipass -n "__fish_multipass_using_subcommand authenticate" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand authenticate" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand auth" -l admin -d 'Trust this client through multipassd-helper instead, as an administrator (polkit asks for the administrator\'s password on a terminal)'
complete -c multipass -n "__fish_multipass_using_subcommand auth" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand auth" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand set" -l admin -d 'Set `local.passphrase` through multipassd-helper, as an administrator, without a trusted client (polkit asks for the administrator\'s password on a terminal)'
complete -c multipass -n "__fish_multipass_using_subcommand set" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand set" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand get" -l keys -d 'List the settings keys instead'
complete -c multipass -n "__fish_multipass_using_subcommand get" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand get" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand list" -l format -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'`{"list": [...]}`'
csv\t'A header line and one line per instance'
yaml\t'A mapping from instance name to its details'"
complete -c multipass -n "__fish_multipass_using_subcommand list" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c multipass -n "__fish_multipass_using_subcommand ls" -l format -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'`{"list": [...]}`'
csv\t'A header line and one line per instance'
yaml\t'A mapping from instance name to its details'"
complete -c multipass -n "__fish_multipass_using_subcommand ls" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c multipass -n "__fish_multipass_using_subcommand version" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand version" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and not __fish_seen_subcommand_from list remove token help" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and not __fish_seen_subcommand_from list remove token help" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and not __fish_seen_subcommand_from list remove token help" -f -a "list" -d 'List the trusted clients: name, fingerprint, who enrolled them and how, when, last seen'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and not __fish_seen_subcommand_from list remove token help" -f -a "remove" -d 'Stop trusting a client, by name or fingerprint prefix'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and not __fish_seen_subcommand_from list remove token help" -f -a "token" -d 'Create, list and revoke one-time enrollment tokens'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and not __fish_seen_subcommand_from list remove token help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from list" -l format -d 'Output format' -r -f -a "table\t'Aligned columns for people'
json\t'`{"list": [...]}`'
csv\t'A header line and one line per instance'
yaml\t'A mapping from instance name to its details'"
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from token" -s v -l verbose -d 'Show more detail; repeat for even more (also asks the daemon for its log lines)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from token" -s h -l help -d 'Print help'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from token" -f -a "create" -d 'Create a one-time enrollment token and print it (it is shown only this once)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from token" -f -a "list" -d 'List enrollment tokens and whether they are still usable'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from token" -f -a "revoke" -d 'Revoke an enrollment token so that nobody can use it'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from token" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the trusted clients: name, fingerprint, who enrolled them and how, when, last seen'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Stop trusting a client, by name or fingerprint prefix'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "token" -d 'Create, list and revoke one-time enrollment tokens'
complete -c multipass -n "__fish_multipass_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "authenticate" -d 'Authenticate this client with the multipass service'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "set" -d 'Set a setting'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "get" -d 'Get a setting\'s value, or list the settings keys'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "list" -d 'List instances'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "version" -d 'Show the versions of the client and of the daemon'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "trust" -d 'Manage trusted clients and one-time enrollment tokens'
complete -c multipass -n "__fish_multipass_using_subcommand help; and not __fish_seen_subcommand_from authenticate set get list version trust help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c multipass -n "__fish_multipass_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "list" -d 'List the trusted clients: name, fingerprint, who enrolled them and how, when, last seen'
complete -c multipass -n "__fish_multipass_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "remove" -d 'Stop trusting a client, by name or fingerprint prefix'
complete -c multipass -n "__fish_multipass_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "token" -d 'Create, list and revoke one-time enrollment tokens'
