#!/bin/sh
# Test certificates with the openssl CLI, EC P-256, valid for 2 days:
#   sh tests/tls/certs.sh DIR
# DIR (created if needed) receives
#   ca.pem, ca.key      a CA (CN ws-test-ca)
#   srv.pem, srv.key    a server certificate signed by the CA for
#                       DNS:localhost, IP:127.0.0.1 and IP:::1
#   other.pem           the same key, signed by the CA, for other.example
#   expired.pem         the same key and names, expired in 2020
#   self.pem            the same key and names, self-signed
# and openssl.log. Exit status 0 when every file was made.
set -u
dir=${1:?usage: sh tests/tls/certs.sh DIR}
mkdir -p "$dir" || exit 1
cd "$dir" || exit 1
cat >t.cnf <<'CNF'
[req]
distinguished_name = dn
[dn]
[v3ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[srv]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
[other]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
[expca]
dir = .
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
policy = pol
x509_extensions = srv
unique_subject = no
[pol]
commonName = supplied
CNF
{
  : >index.txt && echo 10 >serial &&
  K='openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256' &&
  $K -out ca.key && $K -out srv.key &&
  openssl req -x509 -new -key ca.key -subj /CN=ws-test-ca -days 2 \
    -config t.cnf -extensions v3ca -out ca.pem &&
  openssl req -new -key srv.key -subj /CN=localhost -config t.cnf -out srv.csr &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 \
    -days 2 -extfile t.cnf -extensions srv -out srv.pem &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 3 \
    -days 2 -extfile t.cnf -extensions other -out other.pem &&
  openssl ca -batch -notext -config t.cnf -name expca -in srv.csr \
    -startdate 20200101000000Z -enddate 20200102000000Z -out expired.pem &&
  openssl req -x509 -new -key srv.key -subj /CN=localhost -days 2 \
    -config t.cnf -extensions srv -out self.pem
} >openssl.log 2>&1
