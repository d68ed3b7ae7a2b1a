/** The configuration files of each service, written into the state folder on every start. */
import { join } from 'node:path';
import { OPERATOR, DEMO_USERS, REPO, pythonBasePrefix, type Settings } from './settings.js';

const py = (s: string) => JSON.stringify(s);

export function kmsYaml(s: Settings): string {
  return [
    `host: 127.0.0.1`,
    `port: ${s.ports.kms}`,
    `database: ${JSON.stringify(join(s.state, 'kms', 'kms.sqlite'))}`,
    `auditKey: ${JSON.stringify(join(s.state, 'kms', 'audit-key.pem'))}`,
    `agreementVersion: '2025-1'`,
    `hub:`,
    `  apiUrl: http://127.0.0.1:${s.ports.hubInternal}/hub/api`,
    `  cacheSeconds: 30`,
    // The ingress confirms or destroys staged files' keys and mirrors its audit into the KMS.
    `  services: [ingress]`,
    `logLevel: info`,
    '',
  ].join('\n');
}

export function bridgeYaml(s: Settings): string {
  const venvBin = join(s.venv, 'bin');
  return [
    `listen: { host: 127.0.0.1, port: ${s.ports.bridge} }`,
    `gateway: { host: 127.0.0.1, port: ${s.ports.gateway} }`,
    `database: bridge.sqlite`,
    `apiTokenFile: ${JSON.stringify(join(s.state, 'secrets', 'bridge-token'))}`,
    `executor: ${s.executor}`,
    `slurm: { env: { SLURM_CONF: ${JSON.stringify(s.slurmConf)} } }`,
    `logDir: logs`,
    `agentCommand: ${JSON.stringify(`${s.node} ${join(REPO, 'container', 'dist', 'job-agent-cli.js')}`)}`,
    `policy: { kmsUrl: http://127.0.0.1:${s.ports.kms} }`,
    `pollIntervalMs: 500`,
    `resources:`,
    `  cpus: { max: 2, default: 1 }`,
    `  memoryGb: { max: 4, default: 2 }`,
    `  gpus: { max: 0, default: 0, gresName: gpu }`,
    `  hours: { max: 8, default: 2 }`,
    `session:`,
    `  runtime: bwrap`,
    // The project's data is the ingress's cipher tree, mounted through trefs with the user's key:
    // what the data owner uploaded and the PI confirmed is what the researcher sees at /data/demo.
    `  trefs: ${JSON.stringify({
      command: [s.node, join(REPO, 'trefs', 'dist', 'cli.js')],
      cipherRoot: cipherRootOf(s),
      kmsUrl: `http://127.0.0.1:${s.ports.kms}`,
    })}`,
    `  workRoot: ${JSON.stringify(join(s.state, 'bridge', 'jobs'))}`,
    `  listenHost: 127.0.0.1`,
    `  advertiseHost: 127.0.0.1`,
    `  readOnlyPaths: ${JSON.stringify(sessionReadOnlyPaths(s))}`,
    `  pathPrepend: ${JSON.stringify([venvBin])}`,
    '',
  ].join('\n');
}

/** The ingress service's tree: `<ingress root>/projects/<project>/cipher`. */
export function cipherRootOf(s: Settings): string {
  return join(s.state, 'ingress', 'projects', '{project}', 'cipher');
}

/** Where the lab's settings for sessions live (visible read-only inside them). */
export function sessionConfigDir(s: Settings): string {
  return join(s.state, 'session', 'jupyter');
}

/**
 * What a session sees of the host besides its own data: the Python environment, the lab
 * helper with the packages it loads, and the lab's settings. Never the state folder itself:
 * it holds every demo user's tokens and key passphrases.
 */
function sessionReadOnlyPaths(s: Settings): string[] {
  return [
    s.venv,
    pythonBasePrefix(s.venv),
    join(REPO, 'jupyterlab-tre', 'helper'),
    join(REPO, 'crypto'),
    join(REPO, 'kms-service'),
    join(REPO, 'node_modules'),
    sessionConfigDir(s),
  ];
}

/**
 * jupyterlab-tre in a session: the helper run by the node outside's binary (visible under
 * /usr). Filing goes through trefs's key agent at /run/tre/key-agent.sock like a site's
 * session: the filed files are frozen in the project tree and released from there.
 */
export function sessionLabConfig(s: Settings): string {
  return (
    JSON.stringify(
      { TreLab: { helper: [s.node, join(REPO, 'jupyterlab-tre', 'helper', 'dist', 'cli.js')] } },
      null,
      2,
    ) + '\n'
  );
}

/** The TRE console, served by the KMS as a hub service (its path on the hub's public URL). */
export const CONSOLE_PATH = '/services/kms/console/';

/** The hub's page template with a "TRE console" link beside Home and Token. */
export function hubPageTemplate(): string {
  return `{% extends "templates/page.html" %}
{% block nav_bar_left_items %}
  {{ super() }}
  <li class="nav-item">
    <a class="nav-link" id="tre-console-link" href="{{ tre_console_url }}">TRE console</a>
  </li>
{% endblock nav_bar_left_items %}
`;
}

/**
 * JupyterHub: the TreSpawner, the KMS as a hub-managed service, and a password authenticator for
 * the demo users only. The passwords file is read at login and compared in constant time.
 */
export function hubConfig(s: Settings): string {
  const users = [...DEMO_USERS.map((u) => u.name), OPERATOR];
  return `# Written by the TRE demo on every start; edits are overwritten.
import hmac, json
from jupyterhub.auth import Authenticator

c = get_config()  # noqa: F821


class DemoPasswordAuthenticator(Authenticator):
    """Demo logins from a local file. Never for production: use an SSO authenticator."""

    async def authenticate(self, handler, data):
        with open(${py(join(s.state, 'secrets', 'demo-logins.json'))}, encoding='utf-8') as f:
            logins = json.load(f)
        name = (data.get('username') or '').strip()
        given = (data.get('password') or '').encode()
        expected = logins.get(name, '')
        ok = hmac.compare_digest(given, expected.encode())
        return name if ok and expected else None


c.JupyterHub.authenticator_class = DemoPasswordAuthenticator
c.Authenticator.allowed_users = set(${JSON.stringify(users)})
c.Authenticator.admin_users = {${py(OPERATOR)}}
c.JupyterHub.bind_url = 'http://127.0.0.1:${s.ports.hub}'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:${s.ports.hubInternal}'
c.JupyterHub.db_url = 'sqlite:///${join(s.state, 'hub', 'jupyterhub.sqlite')}'
c.JupyterHub.cookie_secret_file = ${py(join(s.state, 'hub', 'cookie_secret'))}
c.JupyterHub.pid_file = ${py(join(s.state, 'hub', 'jupyterhub.pid'))}
c.JupyterHub.cleanup_servers = True
c.ConfigurableHTTPProxy.command = [${py(join(REPO, 'node_modules', 'configurable-http-proxy', 'bin', 'configurable-http-proxy'))}]
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${s.ports.proxyApi}'
c.ConfigurableHTTPProxy.pid_file = ${py(join(s.state, 'hub', 'proxy.pid'))}
c.JupyterHub.spawner_class = 'tre'


async def tre_options_form(spawner):
    # TreSpawner's own default is not registered as a traitlets default, so the form would
    # not show; hand the hub the shim's form explicitly.
    return await spawner._options_form()


c.TreSpawner.options_form = tre_options_form
c.TreSpawner.bridge_url = 'http://127.0.0.1:${s.ports.bridge}'
c.TreSpawner.bridge_token_file = ${py(join(s.state, 'secrets', 'bridge-token'))}
c.Spawner.default_url = '/lab'
# Inside a session the job agent relays the hub's /services/kms/ to the KMS: the lab's panels
# call it there with the user's token. The lab's demo-mode settings come from a folder the
# session sees read-only.
c.Spawner.environment = {
    'TRE_KMS_URL': 'http://127.0.0.1:${s.ports.hubInternal}/services/kms',
    'JUPYTER_CONFIG_PATH': ${py(sessionConfigDir(s))},
}
# The TRE console (the KMS's /console/) in the hub's navigation, on every hub page.
c.JupyterHub.template_paths = [${py(join(s.state, 'hub', 'templates'))}]
c.JupyterHub.template_vars = {'tre_console_url': ${py(CONSOLE_PATH)}}
c.Spawner.start_timeout = 240
c.Spawner.http_timeout = 120
with open(${py(join(s.state, 'secrets', 'demo-service-token'))}, encoding='utf-8') as f:
    demo_token = f.read().strip()
with open(${py(join(s.state, 'secrets', 'ingress-service-token'))}, encoding='utf-8') as f:
    ingress_token = f.read().strip()
c.JupyterHub.services = [
    {
        'name': 'kms',
        'url': 'http://127.0.0.1:${s.ports.kms}',
        'command': [${py(s.node)}, ${py(join(REPO, 'kms-service', 'dist', 'cli.js'))}, 'serve', '--config', ${py(join(s.state, 'kms', 'kms.yaml'))}],
        # The console signs in through the hub's OAuth; it is part of the TRE, so no prompt.
        'oauth_no_confirm': True,
    },
    {'name': 'tre-demo', 'api_token': demo_token},
    {'name': 'ingress', 'api_token': ingress_token},
]
c.JupyterHub.load_roles = [
    # Every user may open the TRE console (the KMS decides what they may do there).
    {'name': 'user', 'scopes': ['self', 'access:services!service=kms']},
    {'name': 'kms', 'scopes': ['read:users'], 'services': ['kms']},
    {
        'name': 'tre-demo',
        'scopes': ['admin:users', 'admin:servers', 'tokens', 'access:servers', 'read:users'],
        'services': ['tre-demo'],
    },
]
`;
}
