'use strict'
// Real X.509 certificates for TLS tests, made with the system's openssl in a fresh directory:
//
//   const { makeCerts } = require('./helpers/certs')
//   const certs = makeCerts(dir)
//   certs.ca / certs.server / certs.client / certs.rogueClient
//     -> { certFile, keyFile, cert, key }   (file paths and PEM texts)
//   certs.rogueCa                           a second CA that etcd does not trust (signs rogueClient)
//
// The server certificate is for 127.0.0.1 (subjectAltName IP:127.0.0.1, and DNS:localhost). It
// carries both serverAuth and clientAuth: etcd's gRPC gateway dials its own server with it.
// Keys are EC P-256: quick to make, and accepted by Go (etcd) and rustls (the addon).

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const OPENSSL = process.env.OPENSSL_BIN || (fs.existsSync('/usr/bin/openssl') ? '/usr/bin/openssl' : 'openssl')

function openssl (args, cwd) {
  try {
    return execFileSync(OPENSSL, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20000 })
  } catch (err) {
    throw new Error(`openssl ${args.join(' ')} failed: ${err.message}\n${err.stderr ? err.stderr.toString() : ''}`)
  }
}

function read (dir, name) {
  const certFile = path.join(dir, `${name}.crt`)
  const keyFile = path.join(dir, `${name}.key`)
  return { certFile, keyFile, cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') }
}

function newKey (dir, name) {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`], dir)
}

function selfSignedCa (dir, name, cn) {
  newKey(dir, name)
  openssl(['req', '-x509', '-new', '-key', `${name}.key`, '-sha256', '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', `${name}.crt`], dir)
  return read(dir, name)
}

function signed (dir, name, cn, ca, extensions) {
  newKey(dir, name)
  openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`], dir)
  fs.writeFileSync(path.join(dir, `${name}.ext`), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'subjectKeyIdentifier=hash',
    'authorityKeyIdentifier=keyid',
    ...extensions
  ].join('\n') + '\n')
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', path.basename(ca.certFile), '-CAkey', path.basename(ca.keyFile),
    '-CAcreateserial', '-days', '2', '-sha256', '-extfile', `${name}.ext`, '-out', `${name}.crt`], dir)
  return read(dir, name)
}

function makeCerts (dir) {
  fs.mkdirSync(dir, { recursive: true })
  const ca = selfSignedCa(dir, 'ca', 'locked test CA')
  const server = signed(dir, 'server', '127.0.0.1', ca, [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'extendedKeyUsage=serverAuth,clientAuth'
  ])
  const client = signed(dir, 'client', 'locked-client', ca, ['extendedKeyUsage=clientAuth'])
  const rogueCa = selfSignedCa(dir, 'rogue-ca', 'rogue CA')
  const rogueClient = signed(dir, 'rogue-client', 'locked-client', rogueCa, ['extendedKeyUsage=clientAuth'])
  return { dir, ca, server, client, rogueCa, rogueClient }
}

module.exports = { makeCerts }
