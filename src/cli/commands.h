/* commands.h — the ctxgate subcommands; each returns the process exit status
 * (0 ok, 1 the input was wrong, 2 usage error). */
#ifndef CTXGATE_CLI_COMMANDS_H
#define CTXGATE_CLI_COMMANDS_H

int cmd_serve(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_crds(int argc, char **argv);
int cmd_schema_doc(int argc, char **argv);
int cmd_ctx(int argc, char **argv);
int cmd_controller(int argc, char **argv);
int cmd_webhook(int argc, char **argv);

#endif
