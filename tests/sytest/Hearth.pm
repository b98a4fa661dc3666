# SyTest homeserver plugin for Hearth.
#
# Follows the shape SyTest expects of a plugin: a SyTest::HomeserverFactory::* class
# that run-tests.pl discovers with -I, and a SyTest::Homeserver subclass that
# configures, starts and stops one server.
#
# Install: run-tests.pl loads plugins from $SYTEST_PLUGINS/*/lib. run.sh (next to this
# file) links  $SYTEST_BED/plugins/hearth/lib/SyTest/HomeserverFactory/Hearth.pm
# to this file and runs  ./run-tests.pl -I Hearth --hearth-binary PATH ...
#
# This copy is Hearth's own (tests/sytest/Hearth.pm in Hearth's repository): the shared
# plugin with the configuration filled in as Hearth gained federation, guests and the
# room-action rate limits. tests/sytest/run.sh lays it over the shared harness.
#
# THIS IS THE FILE TO EDIT WHEN HEARTH'S CONFIG GROWS: everything Hearth is told is
# written in _hearth_config() below, in Hearth's own key names (example.toml). Hearth
# refuses unknown keys, so only keys that exist today are written; the comment in
# _hearth_config() lists what to add as each feature lands.
#
# What SyTest expects of a homeserver (see README.md in this directory):
#   * a TOML config file given as `--config PATH` (HEARTH_* env overrides pass through);
#   * a plain-HTTP listener for the client API (and media, /_synapse/admin);
#   * a TLS listener for federation + key APIs, with the cert/key SyTest hands it;
#   * outbound HTTPS (federation and everything else) trusting SyTest's CA
#     (sytest/keys/ca.crt), loopback destinations allowed;
#   * open registration with m.login.dummy, and Synapse's shared-secret registration
#     (/_synapse/admin/v1/register, HMAC-SHA1) with the secret "reg_secret";
#   * rate limits off, guest access on, room directory publication open.

use strict;
use warnings;

package SyTest::Homeserver::Hearth;
use base qw( SyTest::Homeserver );

use Carp;
use Cwd qw( getcwd );
use File::Path qw( remove_tree make_path );
use Future;
use IO::Async::Process;

use SyTest::SSL qw( ensure_ssl_key create_ssl_cert );

# The shared secret SyTest's tests/10apidoc/01register.pl uses for
# /_synapse/admin/v1/register (hard-coded there).
use constant REGISTRATION_SHARED_SECRET => 'reg_secret';

# The federation (TLS) listener: start() waits for it as well as the client port.
use constant FEDERATION_LISTENER => 1;

sub _init
{
   my $self = shift;
   my ( $args ) = @_;

   $self->{$_} = delete $args->{$_} for qw(
      binary extra_args extra_env extra_toml print_output filter_output
   );
   defined $self->{binary} or croak "SyTest::Homeserver::Hearth needs a binary";
   $self->{extra_args} //= [];
   $self->{extra_env}  //= {};

   $self->SUPER::_init( $args );

   # SyTest hands out ports from its --port-range pool.
   my $idx = $self->{hs_index};
   $self->{ports} = {
      client     => main::alloc_port( "hearth[$idx].client" ),      # plain HTTP
      federation => main::alloc_port( "hearth[$idx].federation" ),  # TLS
   };
   $self->{paths} = {};
}

sub configure
{
   my $self = shift;
   my %params = @_;

   exists $params{$_} and $self->{$_} = delete $params{$_} for qw( print_output filter_output );

   $self->SUPER::configure( %params );
}

# ---- the four methods every SyTest homeserver must provide ---------------------------

# The server name is host:port of the federation listener, so peers (SyTest's own
# fake servers and the other homeserver) reach it directly: an IP literal with an
# explicit port needs no .well-known or SRV lookup.
sub server_name
{
   my $self = shift;
   return $self->{bind_host} . ':' . $self->{ports}{federation};
}

sub federation_host { $_[0]->{bind_host} }

sub federation_port { $_[0]->{ports}{federation} }

# Where SyTest's clients send client-server API requests (plain HTTP is fine:
# SyTest's HTTP client speaks either).
sub public_baseurl
{
   my $self = shift;
   return "http://$self->{bind_host}:$self->{ports}{client}";
}

sub client_port { $_[0]->{ports}{client} }

# ---- start ---------------------------------------------------------------------------

sub start
{
   my $self = shift;

   my $hs_dir = $self->{hs_dir};
   my $output = $self->{output};

   # A fresh store for every run: SyTest assumes an empty server.
   for my $dir ( "$hs_dir/data", "$hs_dir/media" ) {
      remove_tree( $dir ) if -d $dir;
   }
   make_path( "$hs_dir/data", "$hs_dir/media" );

   # TLS for the federation listener: a key, and a cert for bind_host signed by
   # SyTest's test CA (keys/ca.crt; run-tests.pl runs from the SyTest root).
   $self->{paths}{tls_key}  = "$hs_dir/tls.key";
   $self->{paths}{tls_cert} = "$hs_dir/tls.crt";
   ensure_ssl_key( $self->{paths}{tls_key} );
   create_ssl_cert( $self->{paths}{tls_cert}, $self->{paths}{tls_key}, $self->{bind_host} );
   $self->{paths}{ca_cert} = getcwd() . "/keys/ca.crt";

   $self->{paths}{log} = "$hs_dir/hearth.log";
   open my $truncate, '>', $self->{paths}{log} or die "Cannot write $self->{paths}{log}: $!";
   close $truncate;

   my $toml = _to_toml( $self->_hearth_config );
   if( defined $self->{extra_toml} ) {
      # an operator-supplied TOML fragment appended verbatim (must not repeat tables)
      open my $fh, '<', $self->{extra_toml} or die "Cannot read $self->{extra_toml}: $!";
      local $/;
      $toml .= "\n# --- from $self->{extra_toml}\n" . <$fh>;
   }
   $self->{paths}{config} = $self->write_file( 'hearth.toml' => $toml );

   my @command = (
      $self->{binary},
      '--config', $self->{paths}{config},
      @{ $self->{extra_args} },
   );

   $output->diag( "Starting Hearth server-$self->{hs_index}: @command" );

   return $self->_start_and_await_ready(
      command => \@command,
      env     => $self->_environment,
   );
}

# The configuration SyTest needs, in Hearth's key names (example.toml in Hearth's
# repository documents each; anything not written here keeps that file's default).
# Only keys Hearth has today may appear: it refuses unknown keys and would not start.
sub _hearth_config
{
   my $self = shift;
   my $hs_dir = $self->{hs_dir};

   # SyTest registers hundreds of users and sends bursts; Synapse's plugin lifts every
   # limit to 1000/s. Hearth's limits are token buckets that cannot be switched off
   # (per_second > 0, burst_count >= 1), so make them too large to matter.
   my %unlimited = ( per_second => 1_000_000, burst_count => 1_000_000 );

   my %cfg = (
      server_name => $self->server_name,

      # run.sh sets HEARTH_SYTEST_LOG; state resolution is chatty at info.
      log => $ENV{HEARTH_SYTEST_LOG} // 'info,ruma_state_res=warn',

      database => { path => "$hs_dir/data" },

      # A plain-HTTP listener for everything (SyTest calls /openid/userinfo and
      # /3pid/onbind on the client URL), and the TLS listener other servers use.
      listeners => [
         { address => $self->{bind_host}, port => $self->{ports}{client} },
         {
            address   => $self->{bind_host},
            port      => $self->{ports}{federation},
            resources => [ qw( federation keys media ) ],
            tls       => { certificate => $self->{paths}{tls_cert}, key => $self->{paths}{tls_key} },
         },
      ],

      well_known => { client => $self->public_baseurl },

      registration => {
         enabled       => _true(),   # open, m.login.dummy (matrix_register_user)
         shared_secret => REGISTRATION_SHARED_SECRET,
         guest_access  => _true(),
      },

      rate_limits => {
         map { $_ => { %unlimited } }
            qw( login login_failures registration registration_checks message room_creation
                membership typing to_device receipts )
      },

      # Every fake server and the other homeserver are on 127.0.0.1, with
      # certificates from SyTest's CA.
      federation => {
         ca_file            => $self->{paths}{ca_cert},
         ip_range_blacklist => [],
      },
      # SyTest's identity server and push gateway: on loopback, the former
      # with a self-signed certificate.
      outbound => {
         allow_private_addresses     => _true(),
         danger_accept_invalid_certs => _true(),
      },

      presence => { enabled => _true() },   # tests/40presence.pl and presence in /sync

      # URL previews of SyTest's own pages, on loopback behind its CA (Synapse:
      # url_preview_enabled, url_preview_ip_range_blacklist: []).
      media => { url_preview => { enabled => _true(), ip_range_blacklist => [] } },

      # MSC2228 (SyTest's Synapse config enables it: enable_ephemeral_messages).
      experimental => { ephemeral_messages => _true() },
   );

   # ---- TO ADD WHEN HEARTH GAINS THEM -------------------------------------------------
   # Use Hearth's real key names once they exist; the shapes below are suggestions.
   # Values SyTest provides are named in each item.
   #
   # (1-4, the federation listener, outbound trust and loopback, guests: done above.)
   # (5, media and URL previews: done above; the store is under $hs_dir/data.)
   # 6. Application services, server 0 only: $self->{app_service_config_files} is an
   #    array of paths to Synapse-format registration YAML files SyTest writes
   #    (tests/05homeserver.pl: id, url, as_token, hs_token, sender_localpart,
   #    namespaces {users, aliases, rooms}, protocols). SyTest's Synapse plugin passes
   #    the array through unchanged as Synapse's app_service_config_files, e.g.
   #       if( my $files = $self->{app_service_config_files} ) {
   #          $cfg{appservice} = { registration_files => [ @$files ] };
   #       }
   #    (tests/60app-services; without it those tests fail at their fixtures).
   # 7. Room directory: publication open to every user, public rooms readable without
   #    auth (Synapse: room_list_publication_rules allow, allow_public_rooms_without_auth).
   # 8. Email: SyTest's SMTP server, $self->{smtp_server_config}{host, port}, for the
   #    3PID e-mail tests.
   # 9. Recaptcha ($self->{recaptcha_config}{siteverify_api, public_key, private_key},
   #    tests/90jira/SYT-8.pl) and CAS ($self->{cas_config}{server_url}), if Hearth ever
   #    supports them.
   # 10. Default room version for rooms created without one, e.g. from
   #    $ENV{HEARTH_SYTEST_ROOM_VERSION} (wrap it in _string() so TOML gets "10", not 10).
   #    run-tests.pl's --room-version (run.sh passes 10) only covers rooms SyTest creates
   #    through its matrix_create_room function.
   # 11. Anything else SyTest's Synapse plugin sets (lib/SyTest/Homeserver/Synapse.pm in
   #    the SyTest tree): ephemeral messages (MSC2228), no sync response cache,
   #    aliases without membership, cheap password hashing.

   return \%cfg;
}

sub _environment
{
   my $self = shift;

   # IO::Async::Process replaces the environment, so pass on what the binary needs:
   # PATH, and any HEARTH_* / RUST_* set by whoever started run-tests.pl (e.g.
   # HEARTH_LOG, RUST_BACKTRACE), then the plugin's own --hearth-env pairs.
   my %env = ( PATH => $ENV{PATH}, HOME => $ENV{HOME} // '/tmp' );
   for my $k ( keys %ENV ) {
      $env{$k} = $ENV{$k} if $k =~ m/^(HEARTH_|RUST_)/ and $k !~ m/^HEARTH_SYTEST_/;
   }
   %env = ( %env, %{ $self->{extra_env} } );
   return \%env;
}

# Starts the binary and resolves once its listeners accept connections and the client
# API answers GET /_matrix/client/versions. Fails if the process exits first.
sub _start_and_await_ready
{
   my $self = shift;
   my %params = @_;

   my $bind = $self->{bind_host};
   my $name = "hearth-$self->{hs_index}";

   my $proc = $self->_start_process(
      setup   => [ env => $params{env} ],
      command => $params{command},
      name    => $name,
   );
   my $finished = $self->{proc_info}{$proc}->finished_future;

   my $ready = $self->await_connectable( $bind, $self->{ports}{client} );
   $ready = $ready->then( sub { $self->await_connectable( $bind, $self->{ports}{federation} ) } )
      if FEDERATION_LISTENER;
   $ready = $ready->then( sub { $self->_await_versions } );

   return Future->wait_any(
      $ready,
      $finished->without_cancel->then_fail( "$name exited before it was ready" ),
   )->on_done( sub {
      $self->{output}->diag( "Hearth server-$self->{hs_index} ready on " . $self->public_baseurl
         . ( FEDERATION_LISTENER ? " (federation https://" . $self->server_name . ")" : "" ) );
   });
}

sub _await_versions
{
   my $self = shift;
   require SyTest::HTTPClient;

   my $http = SyTest::HTTPClient->new( uri_base => $self->public_baseurl );
   $self->add_child( $http );

   my $tries = 40;
   my $attempt;
   $attempt = sub {
      $http->do_request_json( method => 'GET', full_uri => '/_matrix/client/versions' )
         ->else( sub {
            my ( $why ) = @_;
            return Future->fail( "client API not answering /versions: $why" ) if --$tries <= 0;
            main::delay( 0.25 )->then( $attempt );
         });
   };
   return $attempt->()->on_ready( sub {
      undef $attempt;
      $self->remove_child( $http );
   });
}

# Keep every line the server prints in hearth.log (ProcessManager only keeps the last
# 20 in memory), and echo it with -S / --server-grep.
sub _on_output_line
{
   my $self = shift;
   my ( $proc_info, $line ) = @_;

   if( open my $fh, '>>', $self->{paths}{log} ) {
      print $fh "$line\n";
      close $fh;
   }

   if( $self->{print_output} and !$proc_info->print_output ) {
      my $filter = $self->{filter_output};
      print STDERR "\e[1;35m[" . $proc_info->name . "]\e[m: $line\n"
         if !$filter or $line =~ m/$filter/;
   }

   return $self->SUPER::_on_output_line( $proc_info, $line );
}

# ---- a tiny TOML writer (scalars, arrays of scalars, tables, arrays of tables) --------

sub _true  { \1 }
sub _false { \0 }
# force a value that looks numeric to be written as a TOML string (e.g. room versions)
sub _string { my $s = "$_[0]"; bless \$s, 'SyTest::Homeserver::Hearth::TomlString' }

sub _toml_scalar
{
   my ( $v ) = @_;
   return $$v ? 'true' : 'false' if ref $v eq 'SCALAR';
   my $forced = ref $v eq 'SyTest::Homeserver::Hearth::TomlString';
   return $v if !$forced and defined $v and $v =~ m/^-?(?:0|[1-9][0-9]*)$/;
   my $s = $forced ? $$v : $v // '';
   $s =~ s/(["\\])/\\$1/g;
   $s =~ s/\n/\\n/g;
   $s =~ s/\t/\\t/g;
   $s =~ s/([\x00-\x1f])/sprintf '\\u%04X', ord $1/ge;
   return qq("$s");
}

sub _toml_key
{
   my ( $k ) = @_;
   return $k =~ m/^[A-Za-z0-9_-]+$/ ? $k : _toml_scalar( $k );
}

sub _is_table_array
{
   my ( $v ) = @_;
   return ref $v eq 'ARRAY' && @$v && !grep { ref $_ ne 'HASH' } @$v;
}

sub _to_toml
{
   my ( $table, @path ) = @_;
   my ( @plain, @tables, @table_arrays );

   for my $k ( sort keys %$table ) {
      my $v = $table->{$k};
      if( ref $v eq 'HASH' )      { push @tables, $k }
      elsif( _is_table_array($v) ) { push @table_arrays, $k }
      else                          { push @plain, $k }
   }

   my $out = '';
   for my $k ( @plain ) {
      my $v = $table->{$k};
      my $rendered = ref $v eq 'ARRAY'
         ? '[' . join( ', ', map { _toml_scalar( $_ ) } @$v ) . ']'
         : _toml_scalar( $v );
      $out .= _toml_key( $k ) . " = $rendered\n";
   }
   for my $k ( @tables ) {
      my @sub = ( @path, _toml_key( $k ) );
      $out .= "\n[" . join( '.', @sub ) . "]\n" . _to_toml( $table->{$k}, @sub );
   }
   for my $k ( @table_arrays ) {
      my @sub = ( @path, _toml_key( $k ) );
      for my $elem ( @{ $table->{$k} } ) {
         $out .= "\n[[" . join( '.', @sub ) . "]]\n" . _to_toml( $elem, @sub );
      }
   }
   return $out;
}


package SyTest::HomeserverFactory::Hearth;
use base qw( SyTest::HomeserverFactory );

sub _init
{
   my $self = shift;
   $self->{args} = {
      binary        => $ENV{HEARTH_SYTEST_BINARY} // '../hearth/target/debug/hearth',
      extra_args    => [],
      extra_env     => {},
      extra_toml    => undef,
      print_output  => 0,
      filter_output => undef,
   };
   $self->SUPER::_init( @_ );
}

# Tests marked implementation_specific => ['synapse'] (or 'dendrite') are skipped.
sub implementation_name { 'hearth' }

sub get_options
{
   my $self = shift;
   my $args = $self->{args};
   return (
      'hearth-binary=s'     => \$args->{binary},
      'hearth-arg=s'        => $args->{extra_args},
      'hearth-env=s'        => sub {
         my ( $k, $v ) = split m/=/, $_[1], 2;
         $args->{extra_env}{$k} = $v // '';
      },
      'hearth-extra-toml=s' => \$args->{extra_toml},
      'S|server-log+'       => \$args->{print_output},
      'server-grep=s'       => \$args->{filter_output},
      $self->SUPER::get_options(),
   );
}

sub print_usage
{
   print STDERR <<'EOF';
       --hearth-binary PATH     - the hearth executable (default $HEARTH_SYTEST_BINARY
                                  or ../hearth/target/debug/hearth)
       --hearth-arg ARG         - extra command-line argument (repeatable)
       --hearth-env NAME=VALUE  - extra environment variable (repeatable)
       --hearth-extra-toml FILE - TOML appended to the generated hearth.toml
   -S, --server-log             - echo the server's output
       --server-grep PATTERN    - only echo lines matching PATTERN
EOF
}

sub create_server
{
   my $self = shift;
   my %args = %{ $self->{args} };
   return SyTest::Homeserver::Hearth->new(
      @_,
      %args,
      extra_args => [ @{ $args{extra_args} } ],
      extra_env  => { %{ $args{extra_env} } },
   );
}

1;
