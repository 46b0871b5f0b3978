/**
 * nginx.statusListen, nginx's own status port: the build's arguments (one pure function, whatever
 * playbook declares them), the config block, and stub_status read back for `status`.
 */
import { describe, expect, it } from 'vitest';
import { STATUS_BUILD_WITHOUT, withStatusModule } from '../../src/build/nginx.js';
import { configureOf } from '../../src/engine/deploy.js';
import { parseInventory } from '../../src/inventory/load.js';
import { parseStubStatus, renderNginxConf } from '../../src/lb/nginx.js';

const PLAYBOOK_ARGS = ['--prefix=/opt/k8s/kube-nginx', '--with-stream', '--without-http', '--without-http-cache'];

const inv = (status = '', lb = '') =>
  parseInventory(`
masters: [{ name: master-1, address: 192.0.2.11 }]
nodes: [{ name: n1, address: 192.0.2.21 }]
${lb}
nginx:
  version: 1.22.1
  sources: [http://x.invalid/n.tar.gz]
  sha256: ${'a'.repeat(64)}
${status ? `  statusListen: "${status}"` : ''}
`).inventory!;

const step = (configure: string[]) => ({ name: 'build nginx', type: 'nginxBuild' as const, args: { configure } });

describe('the status build: configure arguments in, configure arguments out', () => {
  it('drops --without-http, adds stub_status and leaves out every other HTTP module, rewrite (PCRE) and gzip (zlib) among them', () => {
    const out = withStatusModule(PLAYBOOK_ARGS);
    expect(out).not.toContain('--without-http');
    expect(out.slice(0, 3)).toEqual(['--prefix=/opt/k8s/kube-nginx', '--with-stream', '--without-http-cache']);
    expect(out).toContain('--with-http_stub_status_module');
    for (const m of ['rewrite', 'gzip', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'grpc', 'memcached', 'ssi', 'userid', 'autoindex', 'access', 'map', 'geo']) {
      expect(out).toContain(`--without-http_${m}_module`);
    }
    expect(out).toEqual([...PLAYBOOK_ARGS.filter((a) => a !== '--without-http'), '--with-http_stub_status_module', ...STATUS_BUILD_WITHOUT]);
  });

  it('keeps what a user playbook adds, in its order, and gives the same arguments when applied again (one build key)', () => {
    const mine = ['--prefix=/srv/lb', '--with-stream', '--without-stream_upstream_least_conn_module', '--without-http', '--without-http_gzip_module'];
    const out = withStatusModule(mine);
    expect(out.slice(0, 4)).toEqual(['--prefix=/srv/lb', '--with-stream', '--without-stream_upstream_least_conn_module', '--without-http_gzip_module']);
    expect(out.filter((a) => a === '--without-http_gzip_module')).toHaveLength(1);
    expect(withStatusModule(out)).toEqual(out);
    expect(mine).toHaveLength(5); // the playbook's own list is not changed
  });

  it('the engine applies it only when nginx.statusListen is set: otherwise the playbook arguments as they are', () => {
    expect(configureOf(inv(), step(PLAYBOOK_ARGS))).toEqual(PLAYBOOK_ARGS);
    expect(configureOf(inv('127.0.0.1:8081'), step(PLAYBOOK_ARGS))).toEqual(withStatusModule(PLAYBOOK_ARGS));
  });
});

describe('the status block of kube-nginx.conf', () => {
  it('absent field: no http block at all, the config ends with the stream block as before', () => {
    const conf = renderNginxConf(inv());
    expect(conf).not.toMatch(/http|stub_status|client_body_temp/);
    expect(conf.endsWith('        proxy_pass kube_apiserver;\n    }\n}\n')).toBe(true);
  });

  it('on the host: /healthz and /stub_status by stub_status, the rest internal (404), no access log, its temp folder under the prefix', () => {
    const conf = renderNginxConf(inv('127.0.0.1:8081', 'lb: { prefix: /srv/kube-nginx }'));
    expect(conf).toContain(
      [
        'http {',
        '    access_log off;',
        '    server_tokens off;',
        '    # The HTTP core makes this folder at start, whatever is asked of it.',
        '    client_body_temp_path /srv/kube-nginx/client_body_temp;',
        '',
        '    server {',
        '        listen 127.0.0.1:8081;',
        '        location = /healthz {',
        '            stub_status;',
        '        }',
        '        location = /stub_status {',
        '            stub_status;',
        '        }',
        '        location / {',
        '            internal;',
        '        }',
        '    }',
        '}',
      ].join('\n'),
    );
    // No directive of a module the status build leaves out (rewrite's return, proxy_pass in http).
    expect(conf.slice(conf.indexOf('http {'))).not.toMatch(/\breturn\b|proxy_pass|gzip/);
  });

  it('in the container: the temp folder in the image /tmp (the only writable folder there); IPv6 in brackets', () => {
    const conf = renderNginxConf(inv('[::1]:8081'), { errorLog: 'stderr', pid: '/tmp/kube-nginx.pid' });
    expect(conf).toContain('    client_body_temp_path /tmp/kube-nginx-client-body;\n');
    expect(conf).toContain('        listen [::1]:8081;\n');
  });
});

describe('stub_status read back', () => {
  it('reads the numbers nginx prints (its trailing spaces included)', () => {
    const text = 'Active connections: 3 \nserver accepts handled requests\n 17 17 40 \nReading: 0 Writing: 1 Waiting: 2 \n';
    expect(parseStubStatus(text)).toEqual({ active: 3, reading: 0, writing: 1, waiting: 2, accepts: 17, handled: 17, requests: 40 });
  });

  it('anything else is not stub_status: undefined, never a guess', () => {
    expect(parseStubStatus('')).toBeUndefined();
    expect(parseStubStatus('<html><body>404 Not Found</body></html>')).toBeUndefined();
    expect(parseStubStatus('Active connections: 3 \nserver accepts handled requests\n 17 17')).toBeUndefined();
    expect(parseStubStatus('Active connections: x \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n')).toBeUndefined();
  });
});
